"""Training an EAGLE-3 draft head for a target served by the reference engine.

One job per module: `prompts` (training prompt sources), `synthesize` (answers by the
target), `hidden_states` (captured target features), `vocab` (draft vocabulary, d2t/t2d),
`head_model` (the head in torch), `ttt` (the training-time-test loop).
"""
