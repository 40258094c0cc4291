"""Posts into a training set: X data exports, JSONL archives, and the dataset the job trains on.

In: archives (an X export, a JSONL of API v2 posts, what a source downloaded). Out: a cleaned, counted,
split `Dataset` (per person: downloaded, retweets, short, duplicates, kept; train and held-out posts),
saved as a request folder's `data/`. `archive` reads within bounded limits whatever a file claims;
`dataset` cleans and balances; `synthetic` makes the bundled sample; `text` holds the patterns the
other stages share (links, mentions).
"""
