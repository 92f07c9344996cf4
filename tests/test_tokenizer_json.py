"""A Hugging Face tokenizer.json that cannot be read is one line naming the file (lm.data.tokenizers)."""

import json

import pytest

from lm.data.tokenizers import HFTokenizer


@pytest.mark.parametrize("text, why", [
    (b"{not json", "Expecting property name"),
    (b"\xff\xfe{", "can't decode byte 0xff"),  # not UTF-8
    (json.dumps({"model": {"type": "Magic"}}).encode(), "model type 'Magic' is not supported"),
])
def test_a_corrupt_tokenizer_json_is_one_line_naming_the_file(tmp_path, text, why):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(text)
    with pytest.raises(ValueError) as err:
        HFTokenizer.from_model_dir(str(tmp_path))
    message = str(err.value)
    assert str(path) in message and why in message and "\n" not in message
