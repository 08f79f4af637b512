"""The SLM's token signals: which tokens are values, and what a trace of logits gives."""

import numpy as np
from tierflow.agents.signals import TokenTrace, token_signals, value_spans


def test_value_spans_cover_the_values_not_the_keys() -> None:
    text = '{"city": "Paris", "days": [1, 2], "unit": {"a": null}}'
    assert [text[a:b] for a, b in value_spans(text)] == ['"Paris"', "[1, 2]", '{"a": null}']
    assert value_spans("[1, 2]") == [] and value_spans('{"a": ') == []


def test_a_trace_records_the_chosen_tokens_log_probability_and_whether_it_was_forced() -> None:
    vocabulary = ['{"', "a", '":', ' "', "x", "y", '"}', "<eos>"]
    trace = TokenTrace()
    ids = [0]
    script = [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 5),
        (6, 6),
    ]  # (preferred, chosen): at 4 the grammar forces y
    for preferred, chosen in script:
        logits = np.full(len(vocabulary), -5.0, dtype=np.float32)
        logits[preferred] = 5.0
        trace(ids, logits)
        ids.append(chosen)
    trace(ids, np.zeros(len(vocabulary), dtype=np.float32))  # the EOS step closes the last token
    assert trace.chosen == [0, 1, 2, 3, 5, 6]
    assert trace.forced == [False, False, False, False, True, False]
    text = "".join(vocabulary[t] for t in trace.chosen)
    assert text == '{"a": "y"}'
    signals = token_signals(trace, lambda t: vocabulary[t].encode(), text)
    assert signals is not None and signals.forced_tokens == 1
    assert signals.tokens == 3  # ' "', 'y', '"}' touch the value '"y"'
    assert signals.min_logprob < -9 < signals.mean_logprob < 0
