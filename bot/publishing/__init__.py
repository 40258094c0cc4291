"""A model folder onto the Hub: run.json, the card and its pictures, one commit, and the playground.

In: a model folder (weights, tokenizer, `run.json`). Out: one Hub commit keyed by its request (or a folder
standing in for the Hub), a card that says what is true of the model, and the playground Space. `facts` is
the typed `run.json` that training writes and everything after reads; `card` and `images` render it;
`hub` publishes, finds and deletes repos through huggingface_hub; `space` serves and deploys the playground.
"""
