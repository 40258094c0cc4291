"""A request folder into a model folder: the job contract and the training loop.

In: a request folder (`job.json` and `data/`, see `job`). Out: a Hub-ready model folder: the weights, the
tokenizer, a typed `run.json` (`bot.publishing.facts`), the model card and its pictures. `train` is the
loop (one short file, read top to bottom), `gpt2` its loss and blocks, `stopping` when to stop, `sampling`
the card's samples, `tiny` the small base model built locally for the demo and the tests.
"""
