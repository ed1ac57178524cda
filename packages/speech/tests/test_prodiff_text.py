"""ProDiff's text front end on tricky text, and its one-line refusals."""

from __future__ import annotations

import pytest

from polydiff.speech.prodiff.text import (
    SPECIALS,
    TextFrontEnd,
    check_text,
    normalize,
    resolve_voice,
    split_sentences,
)

pytest.importorskip("espeakng_loader")


def phones(fe: TextFrontEnd, text: str) -> list[str]:
    """Phonemes without punctuation; Spanish open/closed mid vowels (allophones that espeak-ng
    picks by stress context) merged."""
    allo = {"ɛ": "e", "ɔ": "o"}
    return [allo.get(t.symbol, t.symbol) for t in fe(text) if t.symbol not in SPECIALS]


@pytest.fixture(scope="module")
def es() -> TextFrontEnd:
    return TextFrontEnd("es-419")


@pytest.fixture(scope="module")
def en() -> TextFrontEnd:
    return TextFrontEnd("en-us")


def test_numbers_are_read_as_words_in_the_language(es, en):
    assert phones(es, "Son 123 pesos.") == phones(es, "Son ciento veintitrés pesos.")
    assert phones(en, "I have 42 cats.") == phones(en, "I have forty-two cats.")
    # a decimal comma in Spanish is part of the number, not a clause break
    toks = [t.symbol for t in es("Tengo 3,5 litros.")]
    assert "," not in toks[1:-1]
    assert phones(es, "Tengo 3,5 litros.") == phones(es, "Tengo tres coma cinco litros.")


def test_abbreviations_and_symbols_are_expanded(es, en):
    assert normalize("El Dr. García pagó $3.50 & más.", "es-419") == \
        "El doctor García pagó 3.50 pesos y más."
    assert normalize("Mr. Smith got 20% off.", "en-us") == "mister Smith got 20 percent off."
    # the abbreviation's full stop does not end the sentence
    assert len(es.sentences("El Dr. García llegó. Se fue.")) == 2
    assert phones(en, "Dr. Who") == phones(en, "doctor Who")


def test_sentences_punctuation_stress_and_word_boundaries(es):
    sents = es.sentences("Hola, ¿cómo estás? ¡Muy bien! Adiós...")
    assert [s for s, _ in sents] == ["Hola, ¿cómo estás?", "¡Muy bien!", "Adiós..."]
    toks = sents[0][1]
    assert toks[0].symbol == "^" and toks[-1].symbol == "?"
    assert "," in [t.symbol for t in toks]  # the comma is a pause token
    assert sents[1][1][-1].symbol == "!" and sents[2][1][-1].symbol == "."
    words = [t for t in toks if t.word_start]
    assert len(words) == 3  # hola, cómo, estás
    assert any(t.stress == 2 for t in toks)  # primary stress kept, marks removed
    assert not any(c in t.symbol for t in toks for c in "ˈˌ_")


def test_text_ending_in_a_clause_break(es):
    for text in ("[tonos ascendentes]", "Hola (adiós)", "Bueno —", "«Sí»"):
        toks = es(text)
        assert toks[0].symbol == "^" and toks[-1].symbol == "."
        assert toks[-2].symbol not in SPECIALS


def test_split_sentences_keeps_quotes_and_needs_a_space():
    assert split_sentences('Él dijo "hola." Y se fue. 3.5 es un número.') == \
        ['Él dijo "hola."', "Y se fue.", "3.5 es un número."]


def test_any_language_espeak_speaks():
    for lang in ("ru", "fr", "de", "it", "pt-br"):
        fe = TextFrontEnd(lang)
        assert len(phones(fe, {"ru": "Привет, мир.", "fr": "Bonjour le monde.",
                               "de": "Guten Tag.", "it": "Buongiorno a tutti.",
                               "pt-br": "Bom dia."}[lang])) > 3


def test_foreign_words_lose_language_switch_marks():
    toks = TextFrontEnd("ru")("Привет, hello world.")
    assert all("(" not in t.symbol and ")" not in t.symbol for t in toks)


@pytest.mark.parametrize("text,message", [
    ("", "the text is empty"),
    ("   \n\t", "the text is empty"),
    ("?!... ¿¡ --", "only punctuation"),
    ("hola 😀", "cannot read character '😀' (U+1F600"),
    ("hola\x07", "U+0007"),
])
def test_bad_text_gets_one_line(es, text, message):
    with pytest.raises(ValueError, match=None) as err:
        es.sentences(text)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError):
        check_text(text)


def test_unsupported_language_is_one_line():
    with pytest.raises(ValueError, match="unsupported language code 'xx'") as err:
        TextFrontEnd("xx")
    assert "\n" not in str(err.value) and "es" in str(err.value)
    assert resolve_voice("es_MX") == "es" and resolve_voice("ES-419") == "es-419"


def test_very_long_text_is_split_by_sentence_without_a_cap(es):
    text = " ".join(f"Esta es la frase número {i}." for i in range(60))
    sents = es.sentences(text)
    assert len(sents) == 60
    assert all(toks[0].symbol == "^" and toks[-1].symbol == "." for _, toks in sents)
