"""Contextual negatives: meaning-changing edits of the positive (tier=contextual).

    beam.py            the Beam face: GenerateContextualNegatives, the entity vocabulary, the stage's statistics
    generator.py       per batch of pairs: candidates of every kind -> guard -> selection (ContextualGenerator)
    guard.py           which candidates are kept, and the counts of why the others were not
    entity.py, focus.py, lexical.py (antonym, synonym), negation.py, number.py   one module per kind
    common.py          Candidate, PerturbResources and the text helpers the kinds share
    wordnet_install.py the offline WordNet copy; wordnet_reader.py its reader; tagger.py the part-of-speech lookup

Nothing is imported here, so `transforms.contextual.guard` does not pull in Beam, nlpaug or nltk.
"""
