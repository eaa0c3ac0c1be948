"""few_shot_eval.answer_pattern: the answer a pattern finds in a response, on the real GSM8K rows."""
from __future__ import annotations

import json

from hypothesis import given, strategies as st

from helpers.data import DATA
from runner.train.few_shot import answer

GSM8K = r"#### *(-?[\d,.]+)"


def test_every_gsm8k_reference_has_an_answer_and_commas_do_not_count():
    rows = [json.loads(line) for line in (DATA / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines()]
    found = [answer(r["answer"], GSM8K) for r in rows]
    assert all(found) and len(found) == len(rows)
    assert answer("so 1,000 + 234\n#### 1,234", GSM8K) == "1234"
    assert answer("no marker 42", GSM8K) is None
    assert answer("the answer is 7.", r"\d+") == "7"          # no group: the whole match


@given(st.integers(-10**9, 10**9), st.text(alphabet=st.characters(blacklist_characters="#"), max_size=40))
def test_a_number_after_the_marker_is_found_whatever_comes_before(n, before):
    assert answer(f"{before}\n#### {n:,}", GSM8K) == str(n)
