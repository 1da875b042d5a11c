"""The `messages` input: OpenAI-style chat JSON, refused early with errors that name
the input and the problem."""
from __future__ import annotations

import json

import pytest

from ensemble.chat import InputError, decode_utf8, parse_messages


def test_string_and_text_part_contents_become_strings():
    raw = json.dumps([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
         "name": "ignored"},
        {"role": "assistant", "content": ""},
    ])
    assert parse_messages(raw) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first\nsecond"},
        {"role": "assistant", "content": ""},
    ]


def test_bytes_are_accepted():
    assert parse_messages('[{"role": "user", "content": "héllo"}]'.encode()) == [
        {"role": "user", "content": "héllo"}]


@pytest.mark.parametrize("raw, message", [
    ('[{"role": "user", "content": "hi"}',
     r"^messages: not valid JSON: Expecting ',' delimiter at line 1 column 35 \(char 34\)$"),
    ("", r"^messages: not valid JSON: Expecting value at line 1 column 1 \(char 0\)$"),
    ('{"role": "user", "content": "hi"}', r"^messages: must be a JSON list .* got an object$"),
    ('"hello"', r"^messages: must be a JSON list .* got a string$"),
    ("[]", r"^messages: must contain at least one message, got an empty list$"),
    ('["hi"]', r"^messages\[0\]: must be an object with \"role\" and \"content\", got a string$"),
    ('[{"content": "hi"}]', r"^messages\[0\]: missing \"role\"$"),
    ('[{"role": "user", "content": "a"}, {"role": "user"}]', r"^messages\[1\]: missing \"content\"$"),
    ('[{"role": "tool", "content": "x"}]',
     r"^messages\[0\]\.role: must be one of system, user, assistant, got \"tool\"$"),
    ('[{"role": null, "content": "x"}]', r"^messages\[0\]\.role: must be one of .*, got null$"),
    ('[{"role": "user", "content": 5}]', r"^messages\[0\]\.content: must be a string or a list .* got a number$"),
    ('[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]',
     r"^messages\[0\]\.content\[0\]\.type: only \"text\" parts are supported, got \"image_url\"$"),
    ('[{"role": "user", "content": [{"type": "text"}]}]',
     r"^messages\[0\]\.content\[0\]\.text: must be a string, got null$"),
    ('[{"role": "user", "content": ["hi"]}]', r"^messages\[0\]\.content\[0\]: must be an object"),
])
def test_malformed_messages_are_refused_naming_the_problem(raw, message):
    with pytest.raises(InputError, match=message):
        parse_messages(raw)


def test_invalid_utf8_names_the_byte():
    with pytest.raises(InputError, match=r"^messages: not valid UTF-8 \(byte 0xff at position 2\)$"):
        parse_messages(b'[{\xff')


def test_decode_utf8_names_the_input():
    assert decode_utf8("é".encode(), "text_input") == "é"
    with pytest.raises(InputError, match=r"^text_input: not valid UTF-8 \(byte 0xc3 at position 1\)$"):
        decode_utf8(b"a\xc3", "text_input")
