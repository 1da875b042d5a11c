"""`triton-eagle generate`: a chat by default (messages), the raw prompt with --raw (text_input)."""
import argparse
import json

from triton_eagle.generate import add_arguments, generate_fields


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_prompt_is_sent_as_a_one_message_chat():
    fields = generate_fields(parse("What is 2+2?", "--seed", "5"))
    assert "text_input" not in fields
    assert json.loads(fields["messages"]) == [{"role": "user", "content": "What is 2+2?"}]
    assert fields["seed"] == 5 and "random_seed" not in fields


def test_raw_sends_text_input_without_a_chat_template():
    fields = generate_fields(parse("The capital of France is", "--raw"))
    assert fields["text_input"] == "The capital of France is" and "messages" not in fields
