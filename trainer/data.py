"""Training data from a RUN_DIR or an exported triplet / n-tuple Parquet file, the seeded dev split,
duplicate-free batches, and the per-epoch draw of file negatives by tier weights.

Read with pyarrow alone (no Beam, faiss or Polars: the trainer also runs on a bare GPU box). RUN_DIR paths
mirror schemas/layout.RunLayout, which imports Beam and so cannot be used here. `load_beir_negatives` reads
a BEIR folder plus a compact negatives Parquet file (`compact_negatives` writes it), the form the GPU
benchmark carries.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.negatives import text_hash

logger = logging.getLogger(__name__)

PAD_TIER = "pad"  # a corpus document drawn when an example's tiers cannot fill its file negatives


@dataclass(frozen=True)
class Negative:
    doc_id: str
    text: str
    key: str  # text hash of the normalised text: what "the same text" means in a batch


@dataclass(frozen=True)
class Example:
    """One (query, positive) pair with its candidate file negatives per tier."""

    query_id: str
    anchor: str
    positive_id: str
    positive: str
    negatives: dict[str, tuple[Negative, ...]] = field(default_factory=dict)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset((text_hash(self.anchor), text_hash(self.positive)))


@dataclass
class TrainingData:
    examples: list[Example]
    positives_of: dict[str, frozenset[str]]  # query_id -> every judged positive doc id
    corpus: dict[str, str]  # doc_id -> text (padding and dev evaluation)
    queries: dict[str, str]
    source: dict  # path, kind, manifest summary
    _doc_ids: list[str] | None = field(default=None, repr=False, compare=False)

    def doc_ids(self) -> list[str]:
        """The corpus ids, sorted once per TrainingData (padding draws from them for every short example)."""
        if self._doc_ids is None or len(self._doc_ids) != len(self.corpus):
            self._doc_ids = sorted(self.corpus)
        return self._doc_ids

    def tier_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for example in self.examples:
            for tier, pool in example.negatives.items():
                counts[tier] = counts.get(tier, 0) + len(pool)
        return dict(sorted(counts.items()))


@dataclass(frozen=True)
class DevSet:
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _remote_files(folder: str) -> list[str]:
    """Every file under a gs:// (any non-local) folder, by prefix: object stores have no folders."""
    from storage.files import list_files  # Beam's FileSystems, only for remote paths

    return list_files(folder)


def _local(paths: list[str], root: str) -> list[str]:
    """Remote files downloaded once (pyarrow cannot reach gs:// through Beam's filesystems or credentials)."""
    from storage.files import local_copies

    return local_copies(paths, root)


def _read_parts(folder: str, columns: list[str]) -> dict[str, list]:
    """The columns of every *.parquet part in folder, as Python lists (dictionary columns decoded)."""
    if "://" in folder:
        prefix = folder.rstrip("/") + "/"
        parts = [p for p in _remote_files(folder) if p.endswith(".parquet") and "/" not in p[len(prefix) :]]
        files = _local(parts, folder)
    else:
        files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    if not files:
        raise FileNotFoundError(f"{folder} holds no *.parquet parts; is this a finished RUN_DIR (`negforge build`)?")
    table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")
    return {c: table.column(c).to_pylist() for c in columns}


def _available_tiers(run_dir: str) -> list[str]:
    if "://" in run_dir:
        folder = f"{run_dir.rstrip('/')}/negatives/"
        names = {p[len(folder) :].split("/", 1)[0] for p in _remote_files(folder)}
        return sorted(n.split("=", 1)[1] for n in names if n.startswith("tier="))
    return sorted(p.split("tier=", 1)[1] for p in glob.glob(os.path.join(run_dir, "negatives", "tier=*")))


NEGATIVE_COLUMNS = ["query_id", "positive_id", "negative_id", "negative", "negative_text_hash", "tier"]


def _read_negatives(run_dir: str, tiers: tuple[str, ...]) -> list[tuple]:
    """(query_id, positive_id, tier, negative_id, negative, key) rows of the given tiers."""
    rows: list[tuple] = []
    for tier in tiers:
        folder = os.path.join(run_dir, "negatives", f"tier={tier}")
        missing = tier not in _available_tiers(run_dir) if "://" in run_dir else not os.path.isdir(folder)
        if missing:
            raise FileNotFoundError(
                f"tier {tier!r} is not in {run_dir} (tiers there: {', '.join(_available_tiers(run_dir)) or 'none'}); "
                "pick --tiers from those, or build it (e.g. `negforge build ... --contextual 3`)"
            )
        part = _read_parts(folder, NEGATIVE_COLUMNS)
        rows += zip(part["query_id"], part["positive_id"], [tier] * len(part["query_id"]), part["negative_id"],
                    part["negative"], part["negative_text_hash"])
    return rows


def _pools(rows) -> dict[tuple[str, str], dict[str, tuple[Negative, ...]]]:
    """(query key, positive key, tier, negative id, text, text key) rows -> (query key, positive key) -> tier
    -> negatives, de-duplicated by id and sorted by id."""
    pools: dict[tuple[str, str], dict[str, dict[str, Negative]]] = {}
    for q, p, tier, neg_id, text, key in rows:
        pools.setdefault((q, p), {}).setdefault(tier, {})[neg_id] = Negative(neg_id, text, key)
    return {pair: {t: tuple(v[k] for k in sorted(v)) for t, v in by_tier.items()} for pair, by_tier in pools.items()}


def load_run_dir(run_dir: str, tiers: tuple[str, ...]) -> TrainingData:
    """Examples = inputs/pairs joined with query and doc texts; file negatives from negatives/tier=<t>."""
    docs = _read_parts(os.path.join(run_dir, "inputs", "docs"), ["doc_id", "passage"])
    queries_df = _read_parts(os.path.join(run_dir, "inputs", "queries"), ["query_id", "text"])
    pairs_df = _read_parts(os.path.join(run_dir, "inputs", "pairs"), ["query_id", "positive_id"])
    corpus = dict(zip(docs["doc_id"], docs["passage"]))
    queries = dict(zip(queries_df["query_id"], queries_df["text"]))
    pools = _pools(_read_negatives(run_dir, tiers)) if tiers else {}
    positives_of: dict[str, set[str]] = {}
    examples, skipped = [], 0
    for query_id, positive_id in sorted(set(zip(pairs_df["query_id"], pairs_df["positive_id"]))):
        positives_of.setdefault(query_id, set()).add(positive_id)
        if query_id not in queries or positive_id not in corpus:
            skipped += 1
            continue
        pool = pools.get((query_id, positive_id), {})
        examples.append(Example(query_id, queries[query_id], positive_id, corpus[positive_id], pool))
    if skipped:
        logger.warning("%d pairs name a query or doc missing from %s/inputs; skipped", skipped, run_dir)
    manifest_path = os.path.join(run_dir, "manifest.json")
    manifest = {}
    if "://" in run_dir:
        from apache_beam.io.filesystems import FileSystems

        if FileSystems.exists(manifest_path):
            with FileSystems.open(manifest_path) as handle:
                manifest = json.loads(handle.read().decode("utf-8"))
    elif os.path.exists(manifest_path):
        with open(manifest_path) as handle:
            manifest = json.load(handle)
    source = {"path": run_dir, "kind": "run_dir", "tiers": list(tiers), "manifest": _manifest_summary(manifest)}
    return TrainingData(examples, {q: frozenset(p) for q, p in positives_of.items()}, corpus, queries, source)


def _manifest_summary(manifest: dict) -> dict:
    keep = ("schema_version", "seed", "model", "preset", "config", "stages_finished", "git_sha")
    return {k: manifest[k] for k in keep if k in manifest}


def _negative_columns(columns: list[str]) -> list[str]:
    if "negative" in columns:
        return ["negative"]
    numbered = [c for c in columns if re.fullmatch(r"negative_\d+", c)]
    return sorted(numbered, key=lambda c: int(c.rsplit("_", 1)[1]))


def load_export(path: str) -> TrainingData:
    """An exported triplet (anchor, positive, negative[, tier]) or n-tuple (negative_1..n) Parquet file.

    Ids are text hashes ('q:<hash>', 'd:<hash>'); a query's judged positives are every positive sharing its
    anchor text (CONTRACT.md, pair files). Negatives without a tier column go to the tier 'exported'.
    """
    table = pq.read_table(_local([path], path.rsplit("/", 1)[0])[0] if "://" in path else path)
    neg_columns = _negative_columns(table.column_names)
    if "anchor" not in table.column_names or "positive" not in table.column_names or not neg_columns:
        raise ValueError(
            f"{path} has columns {table.column_names}; an export needs anchor, positive and negative or "
            "negative_1..n (`negforge export RUN_DIR --format triplet|n-tuple`)"
        )
    labelled = "tier" in table.column_names and neg_columns == ["negative"]
    anchors, positives = table.column("anchor").to_pylist(), table.column("positive").to_pylist()
    tiers = [str(t) for t in table.column("tier").to_pylist()] if labelled else ["exported"] * len(anchors)
    rows, tier_names = [], set()
    for column in neg_columns:
        for anchor, positive, negative, tier in zip(anchors, positives, table.column(column).to_pylist(), tiers):
            if negative is not None:
                key = text_hash(negative)
                rows.append((anchor, positive, tier, f"d:{key}", negative, key))
                tier_names.add(tier)
    pools = _pools(rows)
    positives_of: dict[str, set[str]] = {}
    corpus: dict[str, str] = {}
    examples = []
    for anchor, positive in sorted(set(zip(anchors, positives))):
        query_id, positive_id = f"q:{text_hash(anchor)}", f"d:{text_hash(positive)}"
        positives_of.setdefault(query_id, set()).add(positive_id)
        corpus[positive_id] = positive
        examples.append(Example(query_id, anchor, positive_id, positive, pools.get((anchor, positive), {})))
    for pool in pools.values():
        corpus.update({n.doc_id: n.text for negs in pool.values() for n in negs})
    queries = {e.query_id: e.anchor for e in examples}
    source = {"path": path, "kind": "export", "tiers": sorted(tier_names)}
    return TrainingData(examples, {q: frozenset(p) for q, p in positives_of.items()}, corpus, queries, source)


COMPACT_COLUMNS = ["query_id", "positive_id", "negative_id", "tier", "rank", "negative"]


def compact_negatives(run_dir: str, out_path: str, tiers: tuple[str, ...]) -> int:
    """One small Parquet file of RUN_DIR's negatives for `load_beir_negatives`: ids, tier and rank, and the
    text only where the negative is no corpus document (contextual edits). Returns the row count."""
    docs = set(_read_parts(os.path.join(run_dir, "inputs", "docs"), ["doc_id"])["doc_id"])
    columns: dict[str, list] = {c: [] for c in COMPACT_COLUMNS}
    for tier in tiers:
        part = _read_parts(os.path.join(run_dir, "negatives", f"tier={tier}"),
                           ["query_id", "positive_id", "negative_id", "rank", "negative"])
        for q, p, n, rank, text in zip(*(part[c] for c in ("query_id", "positive_id", "negative_id", "rank",
                                                            "negative"))):
            for column, value in zip(COMPACT_COLUMNS, (q, p, n, tier, rank, None if n in docs else text)):
                columns[column].append(value)
    table = pa.table({c: columns[c] for c in COMPACT_COLUMNS},
                     schema=pa.schema([(c, pa.int32() if c == "rank" else pa.string()) for c in COMPACT_COLUMNS]))
    pq.write_table(table, out_path, compression="zstd")
    return table.num_rows


def read_beir(beir_dir: str, split: str) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus, queries, qrels) of a BEIR folder; corpus.jsonl may be gzipped (corpus.jsonl.gz). Passages are
    'title. text' when a title exists (schemas.inputs.passage_of: how negforge's RUN_DIR builds them)."""
    import gzip

    from schemas.inputs import passage_of

    corpus_path = os.path.join(beir_dir, "corpus.jsonl")
    opener = gzip.open if not os.path.exists(corpus_path) else open
    corpus_path = corpus_path if os.path.exists(corpus_path) else corpus_path + ".gz"
    corpus, queries, qrels = {}, {}, {}
    with opener(corpus_path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                corpus[str(record["_id"])] = passage_of(record.get("title") or "", record.get("text") or "")
    with open(os.path.join(beir_dir, "qrels", f"{split}.tsv"), encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            parts = line.rstrip("\r\n").split("\t")
            if number == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    with open(os.path.join(beir_dir, "queries.jsonl"), encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = record["text"]
    return corpus, queries, qrels


def load_beir_negatives(beir_dir: str, negatives_path: str | None, tiers: tuple[str, ...],
                        split: str = "train", beir: tuple | None = None) -> TrainingData:
    """Examples = the BEIR split's (query, positive > 0) pairs; file negatives from a `compact_negatives` file
    (texts from the corpus unless the row carries its own). The same pairs as `negforge build --split`.
    `beir`: read_beir(beir_dir, split)'s result when the caller already has it (not modified here)."""
    corpus, queries, qrels = beir or read_beir(beir_dir, split)
    rows = []
    if negatives_path and tiers:
        table = pq.read_table(negatives_path, columns=["query_id", "positive_id", "negative_id", "tier", "negative"])
        wanted = set(tiers)
        for q, p, n, tier, text in zip(*(table.column(c).to_pylist() for c in table.column_names)):
            if tier in wanted:
                text = text if text is not None else corpus[n]
                rows.append((q, p, tier, n, text, text_hash(text)))
        missing = sorted(wanted - {r[2] for r in rows})
        if missing:
            raise FileNotFoundError(f"tiers {missing} have no rows in {negatives_path}")
    pools = _pools(rows)
    positives_of = {q: frozenset(d for d, s in docs.items() if s > 0) for q, docs in qrels.items()}
    examples = [Example(q, queries[q], d, corpus[d], pools.get((q, d), {}))
                for q in sorted(positives_of) for d in sorted(positives_of[q]) if q in queries and d in corpus]
    source = {"path": beir_dir, "kind": "beir", "negatives": negatives_path, "tiers": list(tiers)}
    return TrainingData(examples, positives_of, corpus, queries, source)


def load_training_data(source: str, tiers: tuple[str, ...]) -> TrainingData:
    """A RUN_DIR folder, or an exported *.parquet file."""
    if source.endswith(".parquet"):
        return load_export(source)
    return load_run_dir(source, tiers)


def split_dev(data: TrainingData, fraction: float, seed: int) -> tuple[TrainingData, DevSet | None]:
    """Hold out round(fraction * n_queries) queries, the first by (crc32(seed:query_id), query_id).

    Their rows leave training; the dev set keeps the whole corpus and their judged positives as qrels."""
    query_ids = sorted({e.query_id for e in data.examples})
    count = min(round(fraction * len(query_ids)), len(query_ids) - 1) if fraction > 0 else 0
    if count <= 0:
        return data, None
    ranked = sorted(query_ids, key=lambda q: (zlib.crc32(f"{seed}:{q}".encode()), q))
    dev_ids = set(ranked[:count])
    train = replace(data, examples=[e for e in data.examples if e.query_id not in dev_ids])
    qrels = {q: {d: 1 for d in sorted(data.positives_of[q])} for q in sorted(dev_ids)}
    dev = DevSet(corpus=data.corpus, queries={q: data.queries[q] for q in sorted(dev_ids)}, qrels=qrels)
    return train, dev


def no_duplicate_batches(examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Seeded shuffle, then batches in which no anchor or positive text appears twice (sentence-transformers'
    NO_DUPLICATES rule): an example that clashes waits for a later batch. Every example appears exactly once.

    First fit in shuffled order: each example joins the earliest batch that is not full and holds none of its
    texts (the same batches as filling batch 1 from the queue, then batch 2 from what is left, ...). Full
    batches are skipped through a union-find pointer, so an example looks only at open batches that clash with
    it and then the one it joins: linear in the examples plus the clashes (a text's rows clash only with each
    other), where the scan of every remaining example per batch was quadratic."""
    order = np.random.default_rng([seed, epoch]).permutation(len(examples)).tolist()
    batches: list[list[int]] = []
    batch_keys: list[set[str]] = []
    next_open: list[int] = []  # union-find: next_open[b] leads to the first batch >= b that is not full

    def first_open(b: int) -> int:
        root = b
        while root < len(next_open) and next_open[root] != root:
            root = next_open[root]
        while b < len(next_open) and next_open[b] != b:  # path compression
            next_open[b], b = root, next_open[b]
        return root

    for index in order:
        keys = examples[index].keys
        b = first_open(0)
        while b < len(batches) and not batch_keys[b].isdisjoint(keys):
            b = first_open(b + 1)
        if b == len(batches):
            batches.append([])
            batch_keys.append(set())
            next_open.append(b)
        batches[b].append(index)
        batch_keys[b] |= keys
        if len(batches[b]) == batch_size:
            next_open[b] = b + 1
    return batches


@dataclass
class Batch:
    """Texts and ids of one micro-batch; negatives are row-major: row i owns negatives[i*n:(i+1)*n]."""

    anchors: list[str]
    positives: list[str]
    positive_ids: list[str]
    negatives: list[str]
    negative_ids: list[str]
    negative_tiers: list[str]
    query_positives: list[frozenset[str]]
    reused: int = 0  # negatives whose text was already in the batch (no fresh candidate was left)
    padded: int = 0  # negatives drawn from the corpus because the example's tiers ran short


def _pick_tier(pools: dict[str, list[Negative]], weights: dict[str, float], taken: set[str], rng) -> str | None:
    """A tier drawn by weight among those with a candidate not yet in the batch (else among non-empty ones)."""
    fresh = [t for t, pool in pools.items() if any(n.key not in taken for n in pool)]
    live = fresh or [t for t, pool in pools.items() if pool]
    if not live:
        return None
    w = np.array([weights[t] for t in live], dtype=np.float64)
    return live[int(rng.choice(len(live), p=w / w.sum()))]


def draw_file_negatives(
    example: Example, count: int, weights: dict[str, float], rng, taken: set[str], data: TrainingData
) -> tuple[list[tuple[str, Negative]], int, int]:
    """`count` (tier, negative) for one example: tier by weight, then uniform within the tier, preferring texts
    not yet in the batch; the corpus pads a short example (never with one of the query's positives).
    Returns (draws, reused, padded) and adds the drawn keys to `taken`."""
    pools = {t: list(example.negatives.get(t, ())) for t, w in weights.items() if w > 0}
    draws, reused = [], 0
    while len(draws) < count:
        tier = _pick_tier(pools, weights, taken, rng)
        if tier is None:
            break
        pool = pools[tier]
        fresh = [i for i, n in enumerate(pool) if n.key not in taken]
        index = fresh[int(rng.integers(len(fresh)))] if fresh else int(rng.integers(len(pool)))
        reused += not fresh
        negative = pool.pop(index)
        draws.append((tier, negative))
        taken.add(negative.key)
    padded = count - len(draws)
    draws += [(PAD_TIER, n) for n in _corpus_padding(example, padded, rng, taken, data)]
    return draws, reused, padded


def _corpus_padding(example: Example, count: int, rng, taken: set[str], data: TrainingData) -> list[Negative]:
    if count <= 0:
        return []
    doc_ids = data.doc_ids()
    excluded = data.positives_of.get(example.query_id, frozenset()) | {example.positive_id}
    out: list[Negative] = []
    for _ in range(50 * count):
        doc_id = doc_ids[int(rng.integers(len(doc_ids)))]
        key = text_hash(data.corpus[doc_id])
        if doc_id not in excluded and key not in taken:
            out.append(Negative(doc_id, data.corpus[doc_id], key))
            taken.add(key)
            if len(out) == count:
                break
    if len(out) < count:
        raise ValueError(f"cannot pad query {example.query_id} to {count} negatives: the corpus is too small")
    return out


def collate_batch(
    examples: list[Example], data: TrainingData, count: int, weights: dict[str, float], seed: int, epoch: int
) -> Batch:
    """Draw each example's file negatives with rng([seed, epoch, crc32(query_id, positive_id)]) and assemble."""
    taken = {key for e in examples for key in e.keys}
    batch = Batch([], [], [], [], [], [], [])
    for example in examples:
        rng = np.random.default_rng([seed, epoch, zlib.crc32(f"{example.query_id}\t{example.positive_id}".encode())])
        draws, reused, padded = draw_file_negatives(example, count, weights, rng, taken, data) if count else ([], 0, 0)
        batch.anchors.append(example.anchor)
        batch.positives.append(example.positive)
        batch.positive_ids.append(example.positive_id)
        batch.query_positives.append(data.positives_of.get(example.query_id, frozenset({example.positive_id})))
        for tier, negative in draws:
            batch.negatives.append(negative.text)
            batch.negative_ids.append(negative.doc_id)
            batch.negative_tiers.append(tier)
        batch.reused += reused
        batch.padded += padded
    return batch
