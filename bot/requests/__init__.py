"""The bot itself: mentions into decisions, the state machine in SQLite, the budget, the replies, the loop.

In: mentions from the sources. Out: one reply per mention, after the request went as far as it may:
`grammar` reads a mention, `policy` decides on it (and again on the accounts once looked up), `store`
keeps every request's state and every consent in one SQLite file, `spend` prices what the networks bill,
`replies` words each answer and guards it, `scheduler` is the one orchestrator that moves requests through
the stages, and `monitoring` tells a supervisor whether it is healthy.
"""
