"""Zero-dependency detectors of personal data: the fallback when Presidio is not installed, and the
detectors Presidio has no recognizer for (street addresses and postcodes, names given after a phrase
such as "my name is" / "je m'appelle", a card's expiry date and security code, social handles).

Each detector takes a text and returns ``Span`` objects; ``find_spans`` runs them all."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    kind: str


# The kinds a scrubber reports, in the order that wins when two spans of different kinds overlap.
KINDS = ("card", "iban", "email", "url", "ip", "phone", "address", "name", "handle")

_W = r"[^\W\d_]"  # one letter, any script
_NAME_WORD = rf"{_W}(?:{_W}|['’-](?={_W}))*"  # Ana, O'Connor, Jean-Pierre, al-rashid
_CAP_WORD = rf"(?:[A-Z]|[À-ÖØ-Þ])(?:{_W}|['’-](?={_W}))*"  # capitalised: Ana, Łukasz is not covered by [A-Z]

# ---------------------------------------------------------------- cards, IBANs, e-mails, URLs, IPs
CARD = re.compile(r"(?<![\w.\-])(?:\d[ .\-]?){12,18}\d(?![\w\-]|\.\d)")
CARD_EXPIRY = re.compile(r"(?<![\d/])(?:0?[1-9]|1[0-2]) ?/ ?(?:20)?\d\d(?![\d/])")
CARD_CODE = re.compile(
    r"(?i)\b(?:cvc2?|cvv2?|cvn|csc|cid|security code|card code|cryptogramme|pr[üu]fziffer|pr[üu]fnummer|"
    r"c[óo]digo(?: de seguridad)?|codice(?: di sicurezza)?|code)\b\W{0,3}(\d{3,4})\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
EMAIL = re.compile(r"(?:\"[^\"\n@]{1,64}\"|(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]{1,64})@(?:\[\d{1,3}(?:\.\d{1,3}){3}\]|[\w-]+(?:\.[\w-]+)+)")
SCHEME_URL = re.compile(r"(?i)\b(?:https?|ftps?|sftp|file)://[^\s<>\"']+|\bwww\d{0,3}\.[^\s<>\"']+")
# Bare domains: common generic TLDs and every two-letter country code, with an optional path.
TLDS = ("com|net|org|info|biz|edu|gov|io|ai|app|dev|me|tv|ly|gg|xyz|online|site|shop|store|blog|tech|page|"
        "studio|travel|museum|design|art|photo|photos|email|link|live|life|world|news|club|cloud|eu|asia|"
        "[a-z]{2}")
BARE_URL = re.compile(rf"(?<![\w@.\-/])(?:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.)+(?:{TLDS})\b"
                      r"(?:/[^\s<>\"']*)?", re.IGNORECASE)
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.]|\.\d)")
HANDLE = re.compile(r"(?<![\w.@/])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?\b")
NOT_TLD = {"js", "py", "md", "txt", "pdf", "doc", "docx", "jpg", "png", "exe", "sh"}  # file names, not sites

# ---------------------------------------------------------------- phones
PHONE = re.compile(r"(?<![\w+/.,\-])(?:\+|00)?\(?\d{1,4}\)?(?:[ .\-]?\(0\))?(?:[ .\-/]?\(?\d{1,5}\)?){1,6}(?![\w/]|[.,]\d)")
DATE_LIKE = re.compile(r"^\d{1,4}([./\-])\d{1,2}\1\d{1,4}$|^\d{1,2}[.:]\d{2}$")

# ---------------------------------------------------------------- addresses
_EN_STREET = ("street|st|road|rd|avenue|ave|lane|ln|drive|dr|grove|close|crescent|terrace|place|pl|square|sq|"
              "court|ct|way|boulevard|blvd|parkway|pkwy|gardens|mews|row|hill|walk|green|circle|highway|hwy")
_STOP = ("a|an|and|or|the|to|in|on|at|of|for|from|with|is|are|was|my|your|his|her|our|their|by|near|"
         "every|this|that|go|goes|went|km|miles|minutes|hours|people|times|years")
EN_ADDRESS = re.compile(
    rf"(?i)\b(?:(?:flat|apt|apartment|unit|suite)\.? ?\w{{1,4}},? )?\d{{1,5}}[a-z]?,? "
    rf"(?:the )?(?:(?!(?:{_STOP})\b)[\w'’\-]+\.? ){{1,3}}?(?:{_EN_STREET})\b\.?")
_FR_TYPE = ("rue|avenue|av\\.|boulevard|bd|place|chemin|impasse|all[ée]e|quai|route|cours|square|passage|"
            "voie|sentier|faubourg|rond-point|parvis|esplanade")
FR_ADDRESS = re.compile(
    rf"(?i)\b\d{{1,4}}(?: ?(?:bis|ter|quater))?,? (?:{_FR_TYPE})"
    rf"(?: (?!(?:et|à|a|avec|mais|pour|depuis|dans|chez|près|pres)\b)[\w'’\-]+){{1,5}}")
_SOUTH_TYPE = ("calle|c/|avenida|avda\\.?|paseo|plaza|carrer|camino|rua|travessa|via|viale|corso|piazza|"
               "largo|vicolo")
SOUTH_ADDRESS = re.compile(
    rf"(?i)(?<!\w)(?:{_SOUTH_TYPE})(?: (?!(?:y|e|en|a|con|per|pero|ma)\b)[\w'’\-]+){{1,5}},? (?:n[ºo°.]\s?)?\d{{1,4}}[a-z]?\b")
DE_ADDRESS = re.compile(
    r"(?:\b[A-ZÄÖÜ][\wäöüß\-]{0,30} )?\b[A-ZÄÖÜ]?[\wäöüß\-]{0,30}(?i:straße|strasse|str\.|weg|allee|gasse|platz|ring|damm|"
    r"ufer|chaussee|steig|pfad|stieg)\s?\d{1,4}(?:\s?[a-z])?\b"
    r"|\b(?:Am|An der|Auf der|Im|In der|Unter den|Zum|Zur) [A-ZÄÖÜ][\wäöüß\-]+ \d{1,4}[a-z]?\b")
UK_POSTCODE = re.compile(r"(?i)\b(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?) \d[ABD-HJLNP-UW-Z]{2}\b"
                         r"|\b(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?)\d[ABD-HJLNP-UW-Z]{2}\b")
EU_POSTCODE = re.compile(r"(?<![\w.,])\d{5}(?= [A-ZÀ-Ý][\wÀ-ÿ'’\-]+)|"
                         r"(?i:code postal|cp|plz|postleitzahl|c[óo]digo postal|cap|zip(?: code)?|postcode|"
                         r"post code|postal code)\W{0,3}(\d{4,5}(?:-\d{4})?)\b")
US_ZIP = re.compile(r"\b(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|RI|"
                    r"S[CD]|T[NX]|UT|V[AT]|W[AIVY]) (\d{5}(?:-\d{4})?)\b")

# ---------------------------------------------------------------- names
# After these the next one to three words are a name, in any case ("my name is ana lopez").
STRONG_TRIGGER = (r"my name is|my name's|my names is|my name are|i'm called|i am called|call me|"
                  r"everyone calls me|they call me|people call me|je m'appelle|je m’appelle|mon nom est|mon prénom est|"
                  r"ich heiße|ich heisse|mein name ist|me llamo|mi nombre es|mi chiamo|il mio nome è|meu nome é|"
                  r"me chamo|nazywam się|mam na imię|ik heet|mijn naam is|jmenuji se|меня зовут")
# After these only capitalised words are a name ("I'm Tom", not "I'm tired").
WEAK_TRIGGER = (r"i'm|i’m|im|i am|this is|it's|it is|je suis|moi c'est|moi c’est|soy|sono|eu sou|ich bin|"
                r"here is|signed|regards|best regards|kind regards|best|cheers|thanks|love")
_NAME_STOP = ("and|i|im|i'm|from|am|is|but|nice|y|et|und|e|and|from|de|aus|da|del|from|here|too|also|"
              "a|an|the|so|very|not|to|in|at|on|with|who|have|has|was|will|like|live|work|speaking|again|ok|"
              "back|later|tomorrow|now|when|if|please|pls|maybe|tonight|today")
STRONG_NAME = re.compile(
    rf"(?i:\b(?:{STRONG_TRIGGER}))[:,]?\s+((?!(?:{_NAME_STOP})\b){_NAME_WORD}"
    rf"(?:\s+(?!(?i:{_NAME_STOP})\b)(?:(?:de|da|del|van|von|al|el|la|le|di|du|der|bin|ibn)\s+)?{_NAME_WORD}){{0,2}})")
WEAK_NAME = re.compile(rf"(?i:\b(?:{WEAK_TRIGGER}))[:,]?\s+({_CAP_WORD}(?:\s+(?:(?:de|da|del|van|von|al|el|la|le|"
                       rf"di|du|der|bin|ibn)\s+)?{_CAP_WORD}){{0,2}})")
TITLE_NAME = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Herr|Frau|Monsieur|Madame|Mme|Mlle|"
                        rf"Señor|Señora|Sr|Sra|Signor|Signora)\.?\s+{_CAP_WORD}(?:\s+{_CAP_WORD})?")
_RELATIVE = ("friend|best friend|sister|brother|husband|wife|boyfriend|girlfriend|mother|mum|mom|father|dad|son|"
             "daughter|cousin|aunt|uncle|colleague|boss|teacher|neighbour|neighbor|partner|grandmother|"
             "grandfather|grandma|grandpa|niece|nephew|flatmate|roommate|classmate|fiancé|fiance|fiancée")
RELATIVE_WORD = re.compile(rf"(?i)(?:{_RELATIVE})s?")
RELATIVE_NAME = re.compile(rf"(?i:\bmy (?:best |new |old |little |big |older |younger )?(?:{_RELATIVE})"
                           rf"(?: is| called| named| was|,)?)\s+({_CAP_WORD}(?:\s+{_CAP_WORD})?)")
VOCATIVE_NAME = re.compile(
    rf"(?i:\b(?:hello|hi|hey|dear|bye|goodbye|thanks|thank you|welcome|nice to meet you|great job|good job|"
    rf"well done|congratulations|sorry|oh|wow|bonjour|salut|hallo|hola|ciao|olá|ola)),?\s+"
    rf"({_CAP_WORD}(?:\s+{_CAP_WORD})?)(?=\s*[,.!?;:]|\s*$)")
# Capitalised words that a trigger can precede without being a name.
NOT_NAMES = frozenset("""
i i'm i’m i've i'd i'll you he she we they it oh ok okay yes no not sorry fine good great happy sad tired hungry ready here there
english british french german spanish italian portuguese brazilian mexican american canadian irish scottish welsh
polish russian ukrainian chinese japanese korean vietnamese thai indian pakistani turkish greek dutch swedish
norwegian danish finnish czech hungarian romanian arab arabic moroccan egyptian nigerian african european asian
muslim christian catholic jewish hindu buddhist atheist vegetarian vegan monday tuesday wednesday thursday friday
saturday sunday january february march april may june july august september october november december teacher
student doctor nurse engineer mr mrs ms dr from in at the a an my your going learning working
je tu il elle nous vous ils mon ma mes ton ta son sa notre votre le la les un une des du et ich er sie wir ihr
mein meine dein deine sein seine unser der die das ein eine und yo él mi mis su el los las una io lui lei lo gli
mio mia eu meu minha os um uma
""".split())


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    s = value.replace(" ", "")
    s = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def _spans(pattern: re.Pattern, text: str, kind: str, group: int = 0,
           keep: Callable[[str], bool] | None = None) -> list[Span]:
    out = []
    for m in pattern.finditer(text):
        g = group if group and m.group(group) is not None else 0
        value = m.group(g)
        if value and (keep is None or keep(value)):
            out.append(Span(m.start(g), m.end(g), kind))
    return out


def trim_url(text: str, span: Span) -> Span:
    end = span.end
    while end > span.start and text[end - 1] in ".,;:!?)]}'\"":
        end -= 1
    return Span(span.start, end, span.kind)


def cards(text: str) -> list[Span]:
    """Luhn-valid numbers of 13-19 digits, and the expiry date and security code next to one."""
    found = _spans(CARD, text, "card", keep=lambda v: 13 <= len(re.sub(r"\D", "", v)) <= 19
                   and luhn_ok(re.sub(r"\D", "", v)))
    if found:
        found += _spans(CARD_EXPIRY, text, "card") + _spans(CARD_CODE, text, "card", group=1)
    else:  # a code named as such is card data even without the number
        found += [s for s in _spans(CARD_CODE, text, "card", group=1)
                  if re.match(r"(?i)cv|csc", text[max(0, s.start - 12):s.start].split()[-1] if
                              text[max(0, s.start - 12):s.start].split() else "")]
    return found


def emails(text: str) -> list[Span]:
    return _spans(EMAIL, text, "email")


def urls(text: str) -> list[Span]:
    found = [trim_url(text, s) for s in _spans(SCHEME_URL, text, "url")]
    for s in _spans(BARE_URL, text, "url"):
        s = trim_url(text, s)
        host = text[s.start:s.end].split("/")[0]
        tld = host.rsplit(".", 1)[-1]
        if tld.lower() in NOT_TLD or "/" not in text[s.start:s.end] and tld != tld.lower() and host != host.upper():
            continue  # "home.It was late": a missing space, not a site
        if not re.search(r"[a-zA-Z]", host.split(".")[0]) and "/" not in text[s.start:s.end]:
            continue
        found.append(s)
    return found


def ibans(text: str) -> list[Span]:
    return _spans(IBAN, text, "iban", keep=iban_ok)


def ips(text: str) -> list[Span]:
    return _spans(IPV4, text, "ip")


def phones(text: str) -> list[Span]:
    """Runs of 8-15 digits in phone groupings; dates, times and thousands are left alone."""
    out = []
    for m in PHONE.finditer(text):
        value = m.group(0).rstrip(" .-/")
        digits = re.sub(r"\D", "", value)
        if not 8 <= len(digits) <= 15 or DATE_LIKE.match(value):
            continue
        if not value.startswith(("+", "0", "(")) and re.fullmatch(r"\d{1,3}(?:[ ,.]\d{3})+", value) \
                and value.endswith("000"):
            continue  # 2 500 000
        if re.fullmatch(r"\d+", value) and not value.startswith("0") and len(digits) < 10:
            continue  # a bare number (an order number) is no phone without its grouping
        out.append(Span(m.start(), m.start() + len(value), "phone"))
    return out


def addresses(text: str) -> list[Span]:
    out = []
    for pattern in (EN_ADDRESS, FR_ADDRESS, SOUTH_ADDRESS, DE_ADDRESS):
        out += _spans(pattern, text, "address")
    out += _spans(UK_POSTCODE, text, "address")
    out += _spans(EU_POSTCODE, text, "address", group=1)
    out += _spans(US_ZIP, text, "address", group=1)
    return out


def _name_value_ok(value: str) -> bool:
    return value.split()[0].lower().strip("'’") not in NOT_NAMES and len(value) > 1


def names(text: str) -> list[Span]:
    """Names introduced by a phrase: "my name is ana", "I'm Tom Baker", "Mrs Patel", "my sister Olga"."""
    out = _spans(STRONG_NAME, text, "name", group=1, keep=lambda v: v.split()[0].lower() not in NOT_NAMES)
    for pattern in (WEAK_NAME, RELATIVE_NAME, VOCATIVE_NAME):
        out += _spans(pattern, text, "name", group=1, keep=_name_value_ok)
    out += _spans(TITLE_NAME, text, "name")
    return out


def handles(text: str) -> list[Span]:
    return _spans(HANDLE, text, "handle")


DETECTORS: tuple[Callable[[str], list[Span]], ...] = (cards, ibans, emails, urls, ips, phones, addresses, names,
                                                        handles)


def find_spans(text: str, detectors: Iterable[Callable[[str], list[Span]]] = DETECTORS) -> list[Span]:
    """Every span the zero-dependency detectors find (overlaps are resolved by the caller)."""
    return [s for detect in detectors for s in detect(text)]
