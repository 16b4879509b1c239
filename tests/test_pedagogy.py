"""Pedagogy metrics on hand-labelled replies, the prompt set's schema and the judge's parser."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import BackendError
from train.evaluate.corrections import reply_takes_up, telling
from train.evaluate.diversity import follow_up_diversity
from train.evaluate.judge import JUDGE_DIMENSIONS, judge_messages, judge_reply, parse_judge
from train.evaluate.pedagogy import (
    aggregate,
    learner_asks,
    score_prompt,
    score_prompt_set,
    score_reply,
)
from train.evaluate.prompt_sets import PromptSetError, load_prompts
from train.evaluate.references import detokenize, reference_corrections
from tutor.learner_errors import LearnerError, find_errors
from tutor.teaching.overt import count_grammar_terms
from tutor.teaching.words import tutor_side

STORE = "Yesterday I go to the store"
BROTHERS = "I have two brother and one sister"


def test_the_target_move_is_a_good_move():
    m = score_reply("Oh, you went to the store yesterday? What did you get?", STORE)
    assert m.takes_up_error and not m.red_pen and not m.echo and m.follow_up and m.follow_up_on_topic
    assert m.style == "recast" and m.good_move and m.follow_up_question == "what did you get"


def test_a_recast_that_also_lectures_is_not_a_good_move():
    m = score_reply("Oh, you went to the store! Remember, go is an irregular verb and the past simple tense "
                    "is went. What did you buy?", STORE)
    assert m.takes_up_error and m.grammar_terms >= 2 and m.style == "explicit" and not m.good_move
    red = score_reply("You should say 'I went to the store'. What did you buy?", STORE)
    assert red.takes_up_error and red.red_pen and red.style == "explicit" and not red.good_move


def test_a_question_that_ignores_the_error():
    m = score_reply("That sounds nice! What did you buy?", STORE)
    assert m.follow_up and m.follow_up_on_topic and m.takes_up_error is False
    assert m.style == "none" and not m.good_move and "the error is not taken up" in m.evidence


def test_an_echo_of_the_learners_first_person():
    m = score_reply("Oh, I have two brothers and one sister? What are their names?", BROTHERS, ["two brothers"])
    assert m.echo and not m.good_move
    assert score_reply("Oh, I went to the store too? What did you get?", STORE).echo
    # the tutor talking about itself is not an echo
    assert not score_reply("I love hiking too! Where do you usually go?", "I love hiking in the Alps").echo


def test_a_correction_from_the_tutors_side_is_taken_up():
    m = score_reply("Oh, you have two brothers and one sister? How old are they?", BROTHERS, ["two brothers"])
    assert m.takes_up_error and not m.echo and m.follow_up_on_topic and m.good_move
    # without a prompt set, find_errors supplies the forms; "you agree" takes up "I am agree"
    assert score_reply("You agree with her? Why do you think so?", "I am agree with my sister").takes_up_error


def test_over_correction_of_a_correct_sentence():
    learner = "I've lived in Porto for six years."
    fine = score_reply("Six years! What do you like most about Porto?", learner, [])
    assert fine.takes_up_error is None and fine.style == "none" and fine.good_move and not fine.over_correction
    for reply in ("Your sentence is correct, well done! Where did you live before?",
                  "Nice use of the present perfect there. Where did you live before?"):
        m = score_reply(reply, learner, [])
        assert m.over_correction and not m.good_move


def test_follow_up_on_topic_is_stricter_than_a_question_mark():
    bare = score_reply("Oh, you went to the store yesterday?", STORE)
    assert bare.follow_up and bare.takes_up_error and not bare.follow_up_on_topic and not bare.good_move
    off = score_reply("Oh, you went to the store yesterday. What is the capital of France?", STORE)
    assert off.follow_up and not off.follow_up_on_topic
    confirm = score_reply("Oh, you have a garden?", "I have a small garden behind the house.", [])
    assert confirm.follow_up and not confirm.follow_up_on_topic
    with_context = score_reply("Nice. And is the cello hard to carry around?", "Yes, every evening after work.", [],
                               context=[{"role": "user", "content": "I play the cello."},
                                        {"role": "assistant", "content": "Do you practise a lot?"}])
    assert with_context.follow_up_on_topic


def test_details_that_real_replies_need():
    # contractions: "you'll visit" takes up "will visit"
    assert score_reply("You'll visit your uncle tomorrow? Does he live far away?",
                       "Tomorrow I will to visit my uncle").good_move
    # without a prompt set, every error find_errors sees must be taken up
    assert score_reply("Apples are healthy! Do you eat fruit every day?", "I buyed two apple").takes_up_error is False
    # an invitation is a follow-up too
    assert score_reply("Do you mean you have a cat named Tom? Tell me about him!", "I has a cat named Tom").good_move
    # the tutor speaking as itself to the learner is not an echo
    assert not score_reply("Sure, I'm happy to give you some advice about your trip. Where are you going?",
                           "I need some advices about my trip").echo
    # a bare "are" from find_errors does not turn "Are they friendly?" into an elicitation
    m = score_reply("They're your neighbours? Are they friendly?", "They is my neighbours")
    assert m.style == "recast" and m.good_move
    # a directive naming the grammar is explicit, a form on a website is not
    assert score_reply("You need the past tense here: watched. Which movie?", "Last night I watch a movie").style \
        == "explicit"
    assert score_reply("Did you use the online form? Was it easy?", "I applied for a visa", []).good_move


@pytest.mark.parametrize("reply, style", [
    ("Oh, you went to the store yesterday? What did you get?", "recast"),
    ("Do you mean you went to the store yesterday? What did you get?", "elicitation"),
    ("Did you go to the store yesterday? What did you get?", "elicitation"),
    ("You went to the store yesterday, and I bet it was packed before the holiday. What did you get?", "expansion"),
    ("That already happened, so: you went to the store? What did you get?", "metalinguistic"),
    ("Think about the past tense here. What did you get at the store?", "metalinguistic"),
    ("The correct form is 'I went'. What did you get?", "explicit"),
    ("We use the past simple because it happened yesterday: you went. What did you get?", "explicit"),
    ("Nice! What did you get?", "none"),
])
def test_style_classification(reply, style):
    assert score_reply(reply, STORE).style == style


def test_grammar_terms_count_overlaps_once():
    assert count_grammar_terms("Think about the past tense here.") == 1
    assert count_grammar_terms("Use the past simple with a plural noun.") == 3
    assert count_grammar_terms("What did you buy?") == 0


STOCK = ["What did you do next?", "How did you feel about that?"]
LEARNERS = ["I visited my aunt in Porto", "We cooked a big curry for the team", "I fixed my bike on Sunday",
            "My cousin opened a small cafe", "I painted the fence blue", "We watched the eclipse from the roof",
            "I started a new novel by Zadie Smith", "My dog learned to open the fridge",
            "I planted tomatoes on the balcony", "We drove along the coast to Nazare"]
VARIED = ["Which aunt is that, the one who sings?", "How spicy was the curry?", "Was it the chain again?",
          "What kind of coffee does the cafe serve?", "Why blue, does it match the door?",
          "Could you see it clearly from up there?", "Which of her novels do you like most?",
          "What does the dog steal from it?", "Do tomatoes grow well on a balcony?",
          "Did you see the big waves at Nazare?"]


def test_stock_questions_score_low_even_when_each_reply_looks_fine():
    stock = [score_reply(f"Nice! {STOCK[i % 2]}", learner, []) for i, learner in enumerate(LEARNERS)]
    varied = [score_reply(f"Nice! {q}", learner, []) for q, learner in zip(VARIED, LEARNERS)]
    assert all(m.good_move for m in stock) and all(m.good_move for m in varied)
    low, high = aggregate(stock), aggregate(varied)
    assert low["good_move"] == high["good_move"] == 1.0
    assert low["diversity"]["distinct"] == 2 and low["diversity"]["top5_share"] == 1.0
    assert high["diversity"]["distinct"] == 10 and high["diversity"]["top5_share"] == 0.0
    assert high["diversity"]["entropy_norm"] == pytest.approx(1.0)
    assert low["pedagogy_score"] < 0.2 and high["pedagogy_score"] == pytest.approx(1.0)


def test_diversity_edge_cases():
    assert follow_up_diversity([None, None])["diversity"] == 0.0
    assert follow_up_diversity(["what now"])["diversity"] == 1.0
    mixed = follow_up_diversity(["a", "a", "b", "c", "d", "e", "f", "g", None])
    assert 0.0 < mixed["diversity"] < 1.0 and mixed["top5_share"] == pytest.approx(2 / 8)


def test_aggregate_reports_every_metric():
    metrics = [score_reply("Oh, you went to the store yesterday? What did you get?", STORE),
               score_reply("The correct form is 'went'.", STORE),
               score_reply("Lovely! How long does it take to grow them?", "I grow tomatoes", [])]
    agg = aggregate(metrics)
    assert agg["n"] == 3 and agg["error_turns"] == 2 and agg["takes_up_error"] == 1.0
    assert agg["red_pen"] == pytest.approx(1 / 3) and agg["good_move"] == pytest.approx(2 / 3)
    assert agg["style"]["recast"] == agg["style"]["explicit"] == agg["style"]["none"] == pytest.approx(1 / 3)
    assert agg["over_correction"] == 0.0 and 0 < agg["pedagogy_score"] <= 1
    json.dumps(agg)  # reports are written as JSON


# ---------------------------------------------------------------- the prompt set
PROMPTS = load_prompts()
ERROR_PROMPTS = [p for p in PROMPTS if p["error_type"]]


def test_prompt_set_schema():
    assert len(PROMPTS) >= 160
    assert len({p["id"] for p in PROMPTS}) == len(PROMPTS)
    assert len({p["error_type"] for p in ERROR_PROMPTS}) >= 15
    assert sum(1 for p in PROMPTS if 1 <= len(p.get("context", [])) <= 3) >= 20
    assert all(p["corrections"] for p in ERROR_PROMPTS)
    assert 0.10 <= 1 - len(ERROR_PROMPTS) / len(PROMPTS) <= 0.20  # about 15% without an error
    assert {p["level"] for p in PROMPTS} == {"beginner", "intermediate", "advanced"}


@pytest.mark.parametrize("prompt", ERROR_PROMPTS, ids=lambda p: p["id"])
def test_corrections_are_real_corrections(prompt):
    told = [c for c in prompt["corrections"] if telling(c)]
    assert told, "every error prompt needs a correction that is more than function words"
    # a learner's question needs an answer too
    answer = " I'd check the station's website first." if learner_asks(prompt["learner"]) else ""
    metrics = score_prompt(prompt, "Oh, " + told[0] + "?" + answer + " How did that go for you?")
    assert metrics.takes_up_error and metrics.good_move
    # saying the learner's own words back (from the tutor's side) must not count as taking the error up
    error = LearnerError(prompt["error_type"], "", tuple(prompt["corrections"]))
    assert not reply_takes_up(tutor_side(prompt["learner"]), error) and not reply_takes_up(prompt["learner"], error)


def test_find_errors_coverage_of_the_prompt_set():
    found = [p for p in ERROR_PROMPTS if find_errors(p["learner"])]
    share = len(found) / len(ERROR_PROMPTS)
    false_alarms = [p["id"] for p in PROMPTS if not p["error_type"] and find_errors(p["learner"])]
    print(f"\nfind_errors finds something in {len(found)}/{len(ERROR_PROMPTS)} error prompts ({share:.0%}); "
          f"false alarms on correct prompts: {false_alarms}")
    assert 0 <= share <= 1


def test_score_prompt_set_by_id_and_in_order():
    prompts = PROMPTS[:3]
    by_id = score_prompt_set(prompts, {p["id"]: "Nice! What happened?" for p in prompts})
    in_order = score_prompt_set(prompts, ["Nice! What happened?"] * 3)
    assert by_id == in_order and len(by_id) == 3
    with pytest.raises(PromptSetError, match="No reply"):
        score_prompt_set(prompts, {})
    with pytest.raises(PromptSetError, match="one reply per prompt"):
        score_prompt_set(prompts, ["only one"])


def test_load_prompts_names_the_bad_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    good = {"id": "a", "learner": "I go home", "error_type": "past_tense", "corrections": ["you went"],
            "level": "beginner"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "corrections": []}) + "\n")
    with pytest.raises(PromptSetError, match="line 2.*at least one correction"):
        load_prompts(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(PromptSetError, match="used twice"):
        load_prompts(path)
    path.write_text("{not json\n")
    with pytest.raises(PromptSetError, match="line 1 is not JSON"):
        load_prompts(path)
    with pytest.raises(PromptSetError, match="No prompt set"):
        load_prompts(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- the optional LLM judge
FULL = {k: 4 for k in JUDGE_DIMENSIONS}


@pytest.mark.parametrize("text", [
    json.dumps(FULL),
    "```json\n" + json.dumps(FULL) + "\n```",
    "Here is my rating:\n" + json.dumps({**FULL, "comment": "warm {and} clear"}) + "\nThanks!",
    json.dumps({"scores": FULL, "comment": "ok"}),
    str(FULL) + "  ",  # single quotes, as Python prints a dict
    json.dumps({k.replace("_", " ").title(): "4/5" for k in JUDGE_DIMENSIONS}),
    json.dumps({k: {"score": 4, "why": "fine"} for k in JUDGE_DIMENSIONS}),
    "\n".join(f"{k.replace('_', ' ').capitalize()}: 4" for k in JUDGE_DIMENSIONS),
    '{"mistake_identification": 4, "guidance": 4, "explicitness": 4, "coherence": 4, "tone": 4, '
    '"human_likeness": 4,}',  # trailing comma
])
def test_judge_parser_reads_what_judges_write(text):
    result = parse_judge(text)
    assert result.scores == {k: 4.0 for k in JUDGE_DIMENSIONS} and result.reason is None
    assert result.overall == pytest.approx(0.75)


@pytest.mark.parametrize("text, reason", [
    ("", "nothing"),
    (None, "nothing"),
    ("I think this reply is quite good overall.", "no scores"),
    ('{"mistake_identification": 9, "tone": "great"}', "out of range"),
    ('{"verdict": "good"}', "no scores"),
    ("[1, 2, 3]", "no scores"),
])
def test_malformed_judge_output_gives_none_with_a_reason(text, reason):
    result = parse_judge(text)
    assert result.scores is None and result.overall is None and reason in result.reason


def test_partial_judge_output_keeps_what_it_has_but_no_overall():
    result = parse_judge('{"tone": 5, "coherence": 3}')
    assert result.scores == {"tone": 5.0, "coherence": 3.0} and result.overall is None
    assert "missing: mistake_identification" in result.reason
    truncated = parse_judge('{"mistake_identification": 4, "guidance": ')  # the judge ran out of tokens
    assert truncated.scores == {"mistake_identification": 4.0} and truncated.overall is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="{}[]\":,'0123456789 tonecoherence_/5\n")))
def test_judge_parser_never_raises(text):
    result = parse_judge(text)
    assert result.scores is None or all(1 <= v <= 5 for v in result.scores.values())


class ScriptedBackend:
    """Stands in for a loaded backend: streams a fixed answer, or fails like a server would."""

    def __init__(self, answer="", error=None):
        self.answer, self.error, self.messages = answer, error, None

    def stream(self, messages, options):
        self.messages = messages
        if self.error:
            raise self.error
        for word in self.answer.split(" "):
            yield type("Chunk", (), {"text": word + " "})()


def test_judge_reply_asks_the_rubric_and_survives_failures():
    backend = ScriptedBackend(json.dumps(FULL))
    result = judge_reply(backend, STORE, "Oh, you went? What did you get?", ["you went"], level="beginner")
    assert result.overall == pytest.approx(0.75)
    system, user = backend.messages
    assert all(k in system["content"] for k in JUDGE_DIMENSIONS)
    assert "you went" in user["content"] and "beginner" in user["content"]
    failed = judge_reply(ScriptedBackend(error=BackendError("HTTP 402: out of credits", status=402)), STORE, "Hi")
    assert failed.scores is None and "402" in failed.reason
    garbage = judge_reply(ScriptedBackend("Sure! I'd rate it highly."), STORE, "Hi")
    assert garbage.scores is None and garbage.reason


def test_judge_messages_include_the_context():
    messages = judge_messages("Yes, twice", "Twice! Where?", None,
                              [{"role": "assistant", "content": "Have you been to Rome?"}])
    assert "Tutor: Have you been to Rome?" in messages[1]["content"] and "none known" in messages[1]["content"]


# ---------------------------------------------------------------- issue 16: metrics a teacher would trust
PROMPT = {p["id"]: p for p in PROMPTS}


def test_a_lone_function_word_is_never_a_correction():
    # "the" and "can" are in almost any reply: with them, a reply that ignores the error took it up
    m = score_reply("The weather can be nice there. What did you buy?", STORE, ["the", "can", "went to the store"])
    assert m.takes_up_error is False and not m.good_move
    assert score_reply("Oh, you went to the store? What did you buy?", STORE, ["the", "went to the store"]).good_move
    with pytest.raises(PromptSetError, match="only function words"):
        score_reply("Oh, the store? What did you buy?", STORE, ["the", "for", "could"])
    assert not telling("you are") and not telling("in the") and telling("an apple") and telling("went")


def test_a_parroted_question_is_not_a_good_move():
    prompt = PROMPT["none-19"]  # "Do you have any tips for remembering new words?"
    m = score_prompt(prompt, "Oh, you mean you have any tips for remembering new words? What do you do?")
    assert m.ignores_question and not m.good_move and "does not answer the learner's question" in m.evidence
    answered = score_prompt(prompt, "Write each new word on a card and use it the same day. Which words are "
                                    "hardest for you?")
    assert not answered.ignores_question and answered.good_move
    assert score_reply("Sure, films next time! Which one should we start with?",
                       "Maybe we can talk about films next time?", []).good_move  # a suggestion, accepted


def test_a_follow_up_may_contain_the_corrected_form():
    m = score_prompt(PROMPT["quantifier-07"],
                     "Oh, you go to the swimming pool every day except Sunday? Do you swim every day?")
    assert m.takes_up_error and m.follow_up_on_topic and m.good_move and m.style == "recast"
    assert m.follow_up_question == "do you swim every day"
    # the recast alone is still no follow-up, and an elicitation is still an elicitation
    assert not score_prompt(PROMPT["quantifier-07"], "Oh, you go to the swimming pool every day?").follow_up_on_topic
    assert score_reply("Did you go to the store yesterday? What did you get?", STORE).style == "elicitation"


@pytest.mark.parametrize("pid, reply", [
    ("future-01", "Oh, you're going to visit your parents in the north? How long will you stay?"),
    ("be_agreement-02", "Oh, the people in your new office are very friendly? What do they do?"),
    ("subject_omission-04", "Oh, your husband works in a hotel restaurant? What does he cook?"),
])
def test_valid_recasts_from_real_replies_take_the_error_up(pid, reply):
    m = score_prompt(PROMPT[pid], reply)
    assert m.takes_up_error and m.good_move


def test_red_pen_is_what_a_teacher_calls_overt():
    learner = "The informations on the website was wrong so I missed my train"
    recast = score_reply("Oh no, the information on the website was wrong? Did you catch the next train?", learner,
                         ["the information", "information was wrong"])
    assert not recast.red_pen and recast.good_move  # "was wrong" is the learner's own story, not a correction
    for reply in ("'Went well', not 'went good'. When will they call you?", "Say 'he cried'. How old is he?",
                  "Just 'despite the rain', without 'of'. Where did you hike?",
                  "Remember, after modal verbs like can we use the base form without to. Which ones?"):
        assert score_reply(reply, "I think it went good", ["went well", "he cried", "despite the rain",
                                                            "can speak"]).red_pen, reply
    praise = score_reply("Your English is excellent, no mistakes at all! Where do you work?", "I work from home.", [])
    assert not praise.red_pen and praise.over_correction and not praise.good_move


def test_stock_questions_are_not_on_topic():
    for reply in ("Oh, you ate pizza with your brother yesterday. What do you like to do in your free time?",
                  "You ate pizza. What is your favourite colour?", "Pizza! Do you like football?"):
        assert not score_reply(reply, "yesterday i eat pizza with my brother", ["you ate"]).follow_up_on_topic, reply
    # a favourite that is the topic, and a question about the event told, are on topic
    assert score_reply("Pizza! What's your favourite pizza?", "I love pizza", []).follow_up_on_topic
    assert score_reply("A concert in the park! Who was playing?", "We went to a concert in the park.",
                       []).follow_up_on_topic


def test_detokenize_and_corrections_from_reference_sentences():
    assert detokenize("I do n't think so , it 's fine ( really ) .") == "I don't think so, it's fine (really)."
    assert detokenize("We ca n't go and she wo n't") == "We can't go and she won't"
    forms = reference_corrections("My sister go to school in bus every days .",
                                  ["My sister goes to school by bus every day .", "My sister goes to school by bus daily ."])
    assert {"sister goes", "by bus", "every day"} <= set(forms)
    assert all(len(f.split()) >= 2 and telling(f) for f in forms)  # context kept, never a lone function word
    learner = "My sister go to school in bus every days ."
    assert score_reply("Your sister goes to school by bus? Is the bus usually on time?", detokenize(learner), forms).good_move
    assert score_reply("Your sister go to school in bus? Is the bus usually on time?", detokenize(learner),
                       forms).takes_up_error is False
    assert reference_corrections("I like it .", ["I like it."]) == []  # punctuation only: no error
