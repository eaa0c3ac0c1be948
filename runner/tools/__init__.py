"""Scripts that make the shipped model's files (python -m runner.tools.make_*): the tokenizer and
configs (make_tokenizer), the held-out evaluation rows (make_heldout) and the pretrained weights
(make_tiny, `make tiny-model`). They sit at the top layer and may use anything; what they write
is package data of runner.builtin, which every layer reads and which imports none of this."""
