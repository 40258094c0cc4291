"""Where requests and posts come from: the networks the bot listens on, and the offline stand-in.

In: a network's API (X through tweepy, Bluesky through atproto) or local files (an inbox, a folder of
archives). Out: mentions, accounts (id and handle), each person's posts as an archive, and replies posted.
`adapters` declares the `Source` protocol and the plain data that crosses this edge; `x`, `bluesky` and
`local` implement it. Everything a server says is made inert here (`bot.common.errors.inert`), and every billed
call is counted (`Usage`) for the bot's budget.
"""
