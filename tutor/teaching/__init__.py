"""Teaching checks of a tutor reply, in one place, used by the flag detector (tutor.detector), the
pedagogy metrics (train.evaluate.pedagogy), the data audit (train.data.audit) and generation
(train.data.generate, train.data.synth):

- ``words``: the words of a turn (tokens, stems, content words, sentences) and first/second-person swaps;
- ``overt``: overt correction: red-pen phrases (each with its own screening words), "a small mistake",
  praise of the learner's grammar, grammar terminology;
- ``replies``: a follow-up question, the learner's first person echoed, Markdown, an error taken up.

Where callers need slightly different versions of one check (the audit's fast word-window echo and
the metrics' sentence-level echo, say) both live here side by side, each documented with how it
differs, so that the outputs they feed stay what they were."""
