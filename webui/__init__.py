"""The Gradio web app: the learner chat page and the tester view. Nothing in Quimbot imports it except the
command-line entry (``quimbot app``)."""
