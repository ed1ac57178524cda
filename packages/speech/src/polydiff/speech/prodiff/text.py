"""The text front end: text -> sentences of phoneme tokens with stress, word boundaries and
punctuation, for any language espeak-ng speaks.

1. :func:`check_text` refuses what cannot be spoken, with one line each: empty text, text
   of only punctuation, characters that are neither letters, digits, punctuation, spaces nor
   one of the symbols read out (emoji, control characters, private-use code points).
2. :func:`normalize` expands abbreviations (a table per language: ``Dr.``, ``Sra.``,
   ``etc.``, ...) and symbols (``&``, ``+``, ``=``, ``@``, ``%``, currency signs placed
   after their amount: ``$3.50`` -> ``3.50 dollars``), so that an abbreviation's full stop
   does not end a sentence. Numbers (cardinals, decimals in the language's own notation,
   ordinals, large numbers, times) are read by espeak-ng's rules for the language: ``123``
   becomes the phonemes of ``ciento veintitrés`` in Spanish and of ``one hundred and
   twenty-three`` in English (tested).
3. :func:`split_sentences` cuts the text at sentence ends (``.``, ``!``, ``?``, ``…``);
   :meth:`TextFrontEnd.sentences` phonemizes each sentence clause by clause
   (:func:`polydiff.speech.espeak.text_to_phonemes`, IPA), so long text is synthesised a
   sentence at a time with no cap on its length.

A sentence is a list of :class:`Token`: ``^`` (the leading silence), phonemes (IPA symbols
without stress marks), punctuation tokens ``,`` (any clause break: ``, ; : — ( )``), and a
final ``.``, ``?`` or ``!`` (the trailing silence and the sentence's tune). Each token carries
its stress (0 none, 1 secondary ``ˌ``, 2 primary ``ˈ``) and whether it starts a word.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["ABBREVIATIONS", "PUNCTUATION", "SPECIALS", "TextFrontEnd", "Token", "check_text",
           "normalize", "resolve_voice", "split_sentences"]

#: Special token symbols (ids 0..len-1 of every vocabulary): padding, unknown, the leading
#: silence, and the punctuation classes.
SPECIALS = ("<pad>", "<unk>", "^", ",", ".", "?", "!")
PUNCTUATION = frozenset(",.?!")

_SYMBOL_WORDS: dict[str, dict[str, str]] = {
    "en": {"&": "and", "+": "plus", "=": "equals", "@": "at", "#": "number", "°": "degrees",
           "$": "dollars", "€": "euros", "£": "pounds", "%": "percent"},
    "es": {"&": "y", "+": "más", "=": "igual a", "@": "arroba", "#": "número",
           "°": "grados", "$": "pesos", "€": "euros", "£": "libras", "%": "por ciento"},
    "fr": {"&": "et", "+": "plus", "=": "égale", "@": "arobase", "#": "numéro",
           "°": "degrés", "$": "dollars", "€": "euros", "£": "livres", "%": "pour cent"},
    "it": {"&": "e", "+": "più", "=": "uguale a", "@": "chiocciola", "#": "numero",
           "°": "gradi", "$": "dollari", "€": "euro", "£": "sterline", "%": "per cento"},
    "de": {"&": "und", "+": "plus", "=": "gleich", "@": "at", "#": "Nummer", "°": "Grad",
           "$": "Dollar", "€": "Euro", "£": "Pfund", "%": "Prozent"},
    "ru": {"&": "и", "+": "плюс", "=": "равно", "@": "собака", "#": "номер",
           "°": "градусов", "$": "долларов", "€": "евро", "£": "фунтов", "%": "процентов"},
}
_CURRENCY = "$€£"

#: Abbreviations expanded before sentence splitting, per language (case-sensitive).
ABBREVIATIONS: dict[str, dict[str, str]] = {
    "en": {"Mr.": "mister", "Mrs.": "missus", "Ms.": "miz", "Dr.": "doctor", "St.": "saint",
           "Prof.": "professor", "Jr.": "junior", "Sr.": "senior", "vs.": "versus",
           "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is", "No.": "number",
           "approx.": "approximately", "min.": "minutes", "a.m.": "A M", "p.m.": "P M"},
    "es": {"Sr.": "señor", "Sra.": "señora", "Srta.": "señorita", "Dr.": "doctor",
           "Dra.": "doctora", "Ud.": "usted", "Uds.": "ustedes", "etc.": "etcétera",
           "p.ej.": "por ejemplo", "núm.": "número", "pág.": "página", "aprox.":
           "aproximadamente", "Av.": "avenida", "EE.UU.": "Estados Unidos"},
    "fr": {"M.": "monsieur", "Mme": "madame", "Mlle": "mademoiselle", "Dr": "docteur",
           "etc.": "et cetera", "p.ex.": "par exemple", "n°": "numéro", "av.": "avenue"},
    "it": {"Sig.": "signor", "Sig.ra": "signora", "Dott.": "dottor", "Prof.": "professor",
           "ecc.": "eccetera", "p.es.": "per esempio", "n.": "numero", "pag.": "pagina"},
    "de": {"Hr.": "Herr", "Fr.": "Frau", "Dr.": "Doktor", "z.B.": "zum Beispiel",
           "usw.": "und so weiter", "bzw.": "beziehungsweise", "Nr.": "Nummer"},
    "ru": {"т.е.": "то есть", "т.д.": "так далее", "т.п.": "тому подобное", "г.": "год",
           "ул.": "улица", "д.": "дом", "руб.": "рублей"},
}

_ALLOWED_SYMBOLS = frozenset("&+=@#°$€£%/'’*^~|<>·")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'»”)\]]))\s+")
# clause breaks: punctuation that is not inside a number ("3,5", "3.5", "12:30")
_CLAUSE = re.compile(r"(?:(?<!\d)[,.:]|[,.:](?!\d))|[;!?…—–()\[\]{}¿¡\"«»“”]|(?<=\s)-(?=\s)")
_LANG_SWITCH = re.compile(r"\([a-z\-]+\)")
_STRESS = {"ˈ": 2, "ˌ": 1}


@dataclass(frozen=True)
class Token:
    """One token of a sentence: an IPA phoneme (stress marks removed) or a punctuation /
    silence symbol of :data:`SPECIALS`; ``stress`` 0/1/2; ``word_start`` for the first
    phoneme of a word."""

    symbol: str
    stress: int = 0
    word_start: bool = False


def _lang(voice: str) -> str:
    return voice.partition("+")[0].split("-")[0].lower()


def resolve_voice(language: str) -> str:
    """The espeak-ng voice for a language code (``"es"``, ``"es-419"``, ``"fr"``, ``"en-us"``,
    ``"pt-br"``...); one-line ``ValueError`` naming the codes espeak-ng speaks otherwise."""
    from polydiff.speech.espeak import voice_names

    names = voice_names()
    code = language.strip().lower().replace("_", "-")
    lowered = {n.lower(): n for n in names}
    if code in lowered:
        return lowered[code]
    base = code.split("-")[0]
    if base and base in lowered:
        return lowered[base]
    shown = ", ".join(n for n in names if "-" not in n)
    raise ValueError(f"unsupported language code {language!r}: espeak-ng speaks {shown} "
                     "(and regional variants such as es-419, en-us, pt-br)")


def check_text(text: str) -> None:
    """Raise a one-line ``ValueError`` for text that cannot be spoken (module docstring)."""
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("nothing to say: the text is empty")
    for pos, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat[0] in "LMNPZ" or ch in "\n\t\r" or ch in _ALLOWED_SYMBOLS:
            continue
        name = unicodedata.name(ch, "no name")
        raise ValueError(f"cannot read character {ch!r} (U+{ord(ch):04X} {name}) at position "
                         f"{pos}: only letters, digits, punctuation and the symbols "
                         f"{''.join(sorted(_ALLOWED_SYMBOLS))} can be spoken")
    if not any(unicodedata.category(c)[0] in "LN" or c in _ALLOWED_SYMBOLS for c in text):
        raise ValueError("nothing to say: the text has only punctuation, no words")


def normalize(text: str, language: str = "en") -> str:
    """NFC, one space between words, abbreviations and symbols written out (module
    docstring). Numbers are left to espeak-ng's rules for ``language``."""
    lang = _lang(language)
    text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    for abbr, full in sorted(ABBREVIATIONS.get(lang, {}).items(), key=lambda kv: -len(kv[0])):
        text = re.sub(rf"(?<!\w){re.escape(abbr)}(?!\w)", full, text)
    words = _SYMBOL_WORDS.get(lang, _SYMBOL_WORDS["en"])
    # currency before or after an amount -> "amount currency-word"
    text = re.sub(rf"([{_CURRENCY}])\s?(\d[\d.,]*\d|\d)",
                  lambda m: f"{m.group(2)} {words[m.group(1)]}", text)
    text = re.sub(rf"(\d)\s?([{_CURRENCY}%])", lambda m: f"{m.group(1)} {words[m.group(2)]}",
                  text)
    for sym in "&+=@#°" + _CURRENCY + "%":
        text = text.replace(sym, f" {words[sym]} ")
    text = re.sub(r"[*^~|<>·]", " ", text)
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    """Sentences of (normalised) text: cut after ``.``, ``!``, ``?`` or ``…`` followed by a
    space (closing quotes and brackets stay with their sentence); empty pieces dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _punct_class(p: str) -> str:
    if p in "?¿":
        return "?"
    if p in "!¡":
        return "!"
    if p in ".…":
        return "."
    return ","


def _phoneme_tokens(clause_phonemes: str) -> list[Token]:
    out: list[Token] = []
    for word in _LANG_SWITCH.sub(" ", clause_phonemes).split():
        first = True
        stress = 0
        for ph in word.split("_"):
            while ph and ph[0] in _STRESS:
                stress = max(stress, _STRESS[ph[0]])
                ph = ph[1:]
            ph = ph.replace("ˈ", "").replace("ˌ", "")
            if not ph or ph == "-":
                continue
            out.append(Token(ph, stress, first))
            first, stress = False, 0
    return out


class TextFrontEnd:
    """Text -> sentences of :class:`Token` for one espeak-ng voice (``language``: a code that
    :func:`resolve_voice` accepts)."""

    def __init__(self, language: str = "en"):
        self.language = language
        self.voice = resolve_voice(language)

    def clauses(self, sentence: str) -> list[tuple[str, str]]:
        """``(text, punctuation class or "")`` pieces of one sentence."""
        out: list[tuple[str, str]] = []
        pos = 0
        for m in _CLAUSE.finditer(sentence):
            piece = sentence[pos:m.start()].strip()
            if piece:
                out.append((piece, _punct_class(m.group())))
            elif out and m.group() not in "¿¡(":
                out[-1] = (out[-1][0], out[-1][1] or _punct_class(m.group()))
            pos = m.end()
        rest = sentence[pos:].strip()
        if rest:
            out.append((rest, ""))
        return out

    def tokens(self, sentence: str) -> list[Token]:
        """The tokens of one (normalised) sentence: ``^``, phonemes with clause breaks,
        and a final ``.``/``?``/``!``."""
        from polydiff.speech.espeak import text_to_phonemes

        toks: list[Token] = [Token("^")]
        final = "."
        for piece, punct in self.clauses(sentence):
            phon: list[Token] = []
            for clause in text_to_phonemes(piece, self.voice):
                phon.extend(_phoneme_tokens(clause))
            if not phon:
                continue
            if toks[-1].symbol not in SPECIALS:
                toks.append(Token(","))
            toks.extend(phon)
            if punct in ("?", "!", "."):
                final = punct
            if punct:
                toks.append(Token("," if punct == "," else punct))
        while toks[-1].symbol in PUNCTUATION:
            sym = toks.pop().symbol
            final = sym if sym != "," else final
        toks.append(Token(final))
        return toks

    def sentences(self, text: str) -> list[tuple[str, list[Token]]]:
        """``(sentence text, tokens)`` per sentence of ``text``; one-line ``ValueError`` for
        text that cannot be spoken (:func:`check_text`)."""
        check_text(text)
        norm = normalize(text, self.voice)
        out = []
        for sent in split_sentences(norm):
            toks = self.tokens(sent)
            if any(t.symbol not in SPECIALS for t in toks):
                out.append((sent, toks))
        if not out:
            raise ValueError("nothing to say: the text has no pronounceable words")
        return out

    def __call__(self, text: str) -> list[Token]:
        """All tokens of ``text`` as one sequence (sentences joined)."""
        out: list[Token] = []
        for _, toks in self.sentences(text):
            out.extend(toks if not out else toks[1:])
        return out
