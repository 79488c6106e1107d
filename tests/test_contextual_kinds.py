"""Each contextual kind on fixed sentences, through the real nlpaug / WordNet / lemminflect path."""

from __future__ import annotations

import random
import re
import threading

import numpy as np
import pytest

from transforms.contextual.common import (
    Candidate,
    PerturbResources,
    changed_spans,
    describe_edit,
    match_sentence,
    split_at_window,
)
from transforms.contextual.entity import (
    entities_in,
    entity_candidates,
    entity_shape,
    entity_type,
    same_entity_type,
    vocabulary_from_counts,
)
from transforms.contextual.focus import focus_candidates, focus_sentence
from transforms.contextual.lexical import antonym_candidates, synonym_candidates
from transforms.contextual.negation import negation_candidates
from transforms.contextual.number import number_candidates


@pytest.fixture(scope="module")
def resources() -> PerturbResources:
    from transforms.contextual.lexical import build_lexical_augmenters
    from transforms.contextual.tagger import WordNetTagger
    from transforms.contextual.wordnet_install import disable_nltk_download
    from transforms.contextual.wordnet_reader import load_wordnet

    disable_nltk_download()
    tagger = WordNetTagger(load_wordnet())
    return PerturbResources("", tagger, build_lexical_augmenters(tagger, ("antonym", "synonym")), {})


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def texts(candidates) -> list[str]:
    return [c.text for c in candidates]


def test_antonym_puts_the_antonym_in_the_original_form(resources):
    out = antonym_candidates("The drug increased survival in mice.", rng(), resources)
    assert [(c.text, c.edit, c.kind) for c in out] == [
        ("The drug decreased survival in mice.", "increased -> decreased", "antonym")
    ]
    out = antonym_candidates("Levels were higher in treated patients.", rng(), resources, attempts=5)
    assert "Levels were lower in treated patients." in texts(out)


def test_antonym_never_touches_function_words_or_negation_cues(resources):
    sentence = "It is not the case that they were not there."
    assert antonym_candidates(sentence, rng(), resources, attempts=5) == []


def test_synonym_replaces_content_words_and_keeps_the_rest_verbatim(resources):
    sentence = "Patients with severe asthma showed rapid improvement (n = 12; p < 0.05)."
    out = synonym_candidates(sentence, rng(3), resources, attempts=3)
    assert out and all(c.kind == "synonym" and c.text != sentence for c in out)
    for cand in out:
        assert cand.text.endswith("(n = 12; p < 0.05).")  # punctuation spacing untouched (nlpaug would re-space)
        assert 1 <= len(cand.edit.split("; ")) <= 2


def test_negation_inserts_not_after_an_auxiliary(resources):
    out = negation_candidates("Expression of BRCA1 is associated with risk.", rng(), resources)
    assert [(c.text, c.edit) for c in out] == [
        ("Expression of BRCA1 is not associated with risk.", "is associated -> is not associated")
    ]


def test_negation_removes_does_not_and_contractions(resources):
    assert texts(negation_candidates("The drug does not reduce mortality.", rng(), resources)) == [
        "The drug does reduce mortality."
    ]
    assert texts(negation_candidates("Levels weren't higher.", rng(), resources)) == ["Levels were higher."]


def test_negation_of_a_main_verb_uses_do_support(resources):
    out = negation_candidates("Treatment increases survival in mice.", rng(), resources)
    assert [(c.text, c.edit) for c in out] == [
        ("Treatment does not increase survival in mice.", "increases -> does not increase")
    ]
    out = negation_candidates("In this cohort we found a strong effect.", rng(), resources)
    assert "In this cohort we did not find a strong effect." in texts(out)


def test_negation_turns_no_into_an_article(resources):
    out = negation_candidates("There was no significant difference.", rng(), resources, attempts=5)
    assert "There was a significant difference." in texts(out)


def test_number_changes_one_quantity_and_keeps_units_and_identifiers(resources):
    sentence = "Mortality fell by 12% in 3T3 cells after IL-6 and BRCA1 knockdown in 2010."
    out = number_candidates(sentence, rng(), resources, attempts=5)
    assert len(out) == 1  # 3T3, IL-6, BRCA1 are identifiers and 2010 a year: only "12%" is a quantity
    new = re.fullmatch(r"Mortality fell by (\d+)% in 3T3 cells after IL-6 and BRCA1 knockdown in 2010\.", out[0].text)
    assert new is not None and new.group(1) != "12" and 0 < int(new.group(1)) <= 100
    assert out[0].edit == f"12% -> {new.group(1)}%"


def test_number_keeps_decimals_and_thousands_separators(resources):
    for seed in range(5):
        out = number_candidates("Among 1,200 adults the odds ratio was 0.85.", rng(seed), resources, attempts=5)
        assert len(out) == 2
        for cand in out:
            match = re.fullmatch(r"Among (\d{1,3}(?:,\d{3})*) adults the odds ratio was (\d+\.\d+)\.", cand.text)
            assert match is not None and len(match.group(2)) == 4  # two decimals kept; "1,200" -> "2,400" or "240"
            assert (match.group(1) != "1,200") != (match.group(2) != "0.85")  # exactly one quantity changed


def test_number_skips_ranges(resources):
    assert number_candidates("Doses of 10-20 mg were given.", rng(), resources) == []


def test_entity_shapes_and_detection():
    assert [entity_shape(t) for t in ("BRCA1", "IL-6", "TNF-α", "p53", "CD4+", "Alzheimer")] == [
        "A9", "A-9", "A-α", "a9", "A9+", "Aa",
    ]  # fmt: skip
    found = entities_in("METHODS: Expression of BRCA1, IL-6 and TNF-α in Danish CONCLUSIONS (95% CI).")
    assert found == ["BRCA1", "IL-6", "TNF-α", "Danish"]  # headings, sentence starts and CI are not entities


def test_entity_swaps_every_mention_for_a_same_type_entity_from_elsewhere(resources):
    vocab = {"symbol:A9": ("BRCA1", "BRCA2", "TP53"), "symbol:A-9": ("IL-6", "IL-10"), "name:1": ("Swedish",)}
    res = PerturbResources("", resources.tagger, {}, vocab)
    sentence = "BRCA1 binds IL-6 in Danish women. Loss of BRCA1 lowers IL-6."
    out = entity_candidates(sentence, rng(), res, attempts=3)
    assert {c.edit.split(" -> ")[0] for c in out} == {"BRCA1", "IL-6", "Danish"}
    for cand in out:
        old, new = cand.edit.split(" -> ")
        assert entity_type(old) == entity_type(new) and new not in sentence  # taken from another document
        assert old not in re.findall(r"[\w-]+", cand.text) and cand.text.count(new) == sentence.count(old)
    assert entity_candidates(sentence, rng(), PerturbResources(), attempts=3) == []  # no vocabulary, no swap


def test_entity_types_keep_swaps_within_a_kind():
    assert [entity_type(e) for e in ("SIDS", "HIV", "NSCLC", "OUTCOME", "IL-6", "BRCA1", "p53", "10mg", "Danish",
                                     "New Zealand", "March")] == [
        "acronym:4-5", "acronym:2-3", "acronym:4-5", "acronym:6+", "symbol:A-9", "symbol:A9", "symbol:a9",
        "quantity:mg", "name:1", "name:2", "month",
    ]  # fmt: skip
    assert same_entity_type("SIDS", "COPD") and same_entity_type("IL-6", "IL-10")
    assert not same_entity_type("SIDS", "OUTCOME") and not same_entity_type("SIDS", "HIV")
    assert not same_entity_type("IL-6", "BRCA1") and not same_entity_type("10mg", "10ml")
    assert not same_entity_type("Danish", "New Zealand") and not same_entity_type("RISK", "DATA")  # heading word


# SciFact-like abstracts: structured headings in capitals, acronyms, a multiword name.
SIDS_CORPUS = [
    "Bed sharing and the risk of sudden infant death syndrome. OBJECTIVE To assess the risk of sudden infant "
    "death syndrome (SIDS) associated with bed sharing. MAIN OUTCOME MEASURES Incidence of SIDS in New Zealand. "
    "RESULTS Bed sharing was associated with SIDS (odds ratio 2.4).",
    "Smoking and COPD. DESIGN, SETTING, AND PARTICIPANTS Cohort of adults in New Zealand. MAIN OUTCOME "
    "MEASURES Hospital admission for COPD. RESULTS Smokers with COPD had more admissions.",
    "NSCLC survival. MAIN OUTCOME MEASURES Overall survival in NSCLC. RESULTS EGFR mutations predicted "
    "response. Patients in South Africa with NSCLC and EGFR mutations lived longer. TRIAL REGISTRATION none.",
    "Markers of SIDS risk. PRIMARY OUTCOME Death. RESULTS EGFR and COPD were unrelated in South Africa.",
]


def test_entity_swaps_are_type_consistent_never_sids_to_outcome(resources):
    frequency: dict[str, int] = {}
    for passage in SIDS_CORPUS:
        for entity in entities_in(passage):
            frequency[entity] = frequency.get(entity, 0) + 1
    vocab = vocabulary_from_counts(frequency, min_df=1)
    everything = {e for entities in vocab.values() for e in entities}
    assert {"OUTCOME", "MEASURES", "MAIN", "RESULTS", "REGISTRATION", "PARTICIPANTS", "PRIMARY"}.isdisjoint(everything)
    assert {"SIDS", "COPD", "NSCLC", "EGFR"} <= set(vocab["acronym:4-5"]) and "New Zealand" in vocab["name:2"]
    text = (
        "Bed sharing and infant death. MAIN OUTCOME MEASURES Incidence of SIDS. "
        "RESULTS Bed sharing was associated with SIDS in New Zealand."
    )
    res = PerturbResources("Is bed sharing associated with SIDS?", resources.tagger, {}, vocab)
    swaps = [c.edit for seed in range(20) for c in entity_candidates(text, rng(seed), res, attempts=3)]
    assert swaps and all(same_entity_type(*edit.split(" -> ")) for edit in swaps)
    assert {e.split(" -> ")[1] for e in swaps if e.startswith("SIDS")} <= {"COPD", "NSCLC", "EGFR"}
    assert {e.split(" -> ")[0] for e in swaps} == {"SIDS", "New Zealand"}


def test_one_word_names_are_never_swapped_for_or_from_common_words(resources):
    vocab = {"name:1": ("Successful", "Review", "Swedish", "Leptin")}
    res = PerturbResources("", resources.tagger, {}, vocab)
    text = "Levels of Adiponectin in Danish men, a Successful Review."
    swaps = {c.edit for seed in range(10) for c in entity_candidates(text, rng(seed), res, attempts=3)}
    assert {e.split(" -> ")[0] for e in swaps} == {"Adiponectin", "Danish"}  # "Successful", "Review": common words
    assert {e.split(" -> ")[1] for e in swaps} == {"Leptin", "Swedish"}
    vocab = {"name:2": ("Membrane Biogenesis", "South Africa"), "name:3": ("Outer Membrane Biogenesis",)}
    res = PerturbResources("", resources.tagger, {}, vocab)
    text = "Cohorts in New Zealand, a Subcutaneous Semaglutide trial with Outer Membrane Biogenesis assays."
    swaps = {c.edit for seed in range(10) for c in entity_candidates(text, rng(seed), res, attempts=3)}
    assert swaps == {"New Zealand -> South Africa"}  # a listed name; the others are capitalised common words


def test_entity_swaps_take_entities_of_the_focus_sentence_and_replace_every_mention(resources):
    vocab = {"acronym:4-5": ("COPD", "EGFR"), "name:2": ("South Africa",)}
    text = "Cohorts in New Zealand. SIDS was more common with bed sharing. Deaths from SIDS fell."
    span = match_sentence(text, "Bed sharing increases SIDS")
    assert text[slice(*span)] == "SIDS was more common with bed sharing."
    res = PerturbResources("Bed sharing increases SIDS", resources.tagger, {}, vocab, focus=span)
    out = entity_candidates(text, rng(), res, attempts=3)
    assert [c.edit.split(" -> ")[0] for c in out] == ["SIDS"]  # "New Zealand" is outside the focus sentence
    assert "SIDS" not in out[0].text and out[0].text.count(out[0].edit.split(" -> ")[1]) == 2


def test_match_sentence_and_changed_spans():
    text = "Obesity is common. IL-6 activates STAT3 in T cells. IL-6 levels were high."
    assert text[slice(*match_sentence(text, "Does IL-6 activate STAT3 in cells?"))] == (
        "IL-6 activates STAT3 in T cells."
    )
    assert match_sentence(text, "unrelated query words") is None
    assert text[slice(*match_sentence(text, "IL-6"))] == "IL-6 activates STAT3 in T cells."  # ties: earliest
    after = text.replace("activates", "does not activate")
    assert [text[a:b] for a, b in changed_spans(text, after)] == ["activates"]
    assert changed_spans(text, text.replace("T cells.", "T  cells.")) == [(44, 45)]


def test_focus_swaps_the_query_words_of_the_most_overlapping_sentence(resources):
    text = "Obesity is common. IL-6 activates STAT3 in regulatory cells. Results were robust."
    res = PerturbResources("Does IL-6 activate STAT3?", resources.tagger, {}, {})
    assert text[slice(*focus_sentence(text, res.query))] == "IL-6 activates STAT3 in regulatory cells."
    out = focus_candidates(text, rng(), res, attempts=1)
    assert [(c.text, c.edit) for c in out] == [
        ("Obesity is common. STAT3 activates IL-6 in regulatory cells. Results were robust.", "IL-6 <-> STAT3")
    ]
    assert focus_candidates(text, rng(), PerturbResources("unrelated words", resources.tagger), attempts=3) == []


@pytest.mark.parametrize(
    "generator", [antonym_candidates, synonym_candidates, negation_candidates, number_candidates, focus_candidates]
)
def test_generators_depend_only_on_text_and_rng(resources, generator):
    text = (
        "Increased IL-6 is associated with higher mortality (12% vs 8%) and lower survival in older patients. "
        "Treatment reduces IL-6 levels and improves survival in 40 patients."
    )
    res = PerturbResources("Is IL-6 linked to mortality or survival?", resources.tagger, resources.augmenters, {})
    random.seed(1)
    np.random.seed(1)
    first = generator(text, rng(7), res, attempts=3)
    random.seed(2)  # nlpaug's global RNGs must not matter
    np.random.seed(2)
    assert first and generator(text, rng(7), res, attempts=3) == first


def test_lexical_augmenters_are_thread_safe(resources):
    text = "Increased expression was associated with higher risk and lower survival in treated mice."
    expected = [synonym_candidates(text, rng(seed), resources) for seed in range(8)]
    results: dict[int, list] = {}

    def work(seed: int) -> None:
        results[seed] = synonym_candidates(text, rng(seed), resources)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[seed] for seed in range(8)] == expected


def test_describe_edit_shows_context_for_insertions():
    assert (
        describe_edit("X is associated with Y", "X is not associated with Y") == "is associated -> is not associated"
    )
    assert describe_edit("a b c", "a d c") == "b -> d"
    assert describe_edit("a b c d", "x b c y") == "a -> x; d -> y"


def test_split_at_window_keeps_the_edit_window_inside_the_model_window(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = " ".join(f"word{i} interleukin-{i}" for i in range(200))
    head, tail = split_at_window(text, tokenizer, window_tokens=50, margin_tokens=8)
    assert head + tail == text and tail.startswith(" ") and head
    assert len(tokenizer(head, add_special_tokens=False)["input_ids"]) <= 42
    assert len(tokenizer(head + tail.split()[0], add_special_tokens=False)["input_ids"]) > 42 - 8  # not cut short
    assert split_at_window("short text", tokenizer, window_tokens=50) == ("short text", "")


def test_antonyms_come_from_the_most_frequent_sense_that_has_one(resources):
    out = antonym_candidates("Patients with regular exercise had fewer events.", rng(), resources, attempts=5)
    assert "Patients with irregular exercise had fewer events." in texts(out)
    assert not any("constipated" in t for t in texts(out))  # a rarer sense's antonym


def test_synonyms_skip_spelling_and_containment_variants(resources):
    synonyms = resources.augmenters["synonym"].model
    assert "tumor" not in synonyms.predict("tumour", pos="n")
    assert "cerebral cortex" not in [f.replace("_", " ") for f in synonyms.predict("cortex", pos="n")]


def test_no_do_support_across_a_sentence_or_title_break(resources):
    assert negation_candidates("Obesity and diabetes. Links between them were weak.", rng(), resources, 9) == [
        Candidate("Obesity and diabetes. Links between them were not weak.", "were weak -> were not weak", "negation")
    ]
    assert entities_in("A PCR-based assay of IL-6-induced STAT3") == ["STAT3"]


def test_numbers_glued_to_a_capital_are_names_not_quantities(resources):
    sentence = "Organoid (3D) and class 2A cultures grew 2-fold in 5 days."
    out = number_candidates(sentence, rng(), resources, attempts=5)
    assert {c.edit.split(" -> ")[0] for c in out} == {"2", "5"}  # "2" of "2-fold" and "5": quantities


def test_focus_ignores_short_and_function_words(resources):
    text = "Ablation per se of T cells treats cancer."
    res = PerturbResources("Does ablation of T cells treat cancer?", resources.tagger, {}, {})
    swapped = {frozenset(c.edit.split(" <-> ")) for c in focus_candidates(text, rng(), res, attempts=9)}
    assert swapped and all("per" not in pair and "T" not in pair for pair in swapped)
