import pytest

from tutor.privacy import scrub


@pytest.mark.parametrize("text, expected, kinds", [
    ("Write me at ana.lopez+eng@mail.example.org please", "Write me at [EMAIL] please", {"email": 1}),
    ("Call +34 612 345 678 or (555) 123-4567", "Call [PHONE] or [PHONE]", {"phone": 2}),
    ("My name is Ana Lopez and I live at 12 Baker Street.", "My name is [NAME] and I live at [ADDRESS].",
     {"name": 1, "address": 1}),
    ("my card is 4111 1111 1111 1111", "my card is [CARD]", {"card": 1}),
    ("see https://example.com/u/ana or @ana_lo on insta", "see [URL] or [HANDLE] on insta", {"url": 1, "handle": 1}),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [IBAN]", {"iban": 1}),
    ("server 192.168.1.20 is mine", "server [IP] is mine", {"ip": 1}),
])
def test_personal_data_is_replaced(text, expected, kinds):
    out, counts = scrub(text)
    assert out == expected and dict(counts) == kinds


@pytest.mark.parametrize("text", ["I was born in 1990 and moved in 2019.", "I have 2 brothers and 3 sisters.",
                                  "Call me at 10:30 tomorrow", "I am happy", "We were 150 people at the party.",
                                  "My email is broken."])
def test_ordinary_learner_text_is_left_alone(text):
    assert scrub(text) == (text, {})
