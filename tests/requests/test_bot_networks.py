"""One bot on X and Bluesky at once: `huggingtweets run --once` in a subprocess against the loopback X API,
Bluesky server and Hub. Each mention is answered on its own network, once, and priced by it."""

from __future__ import annotations


import pytest
from fake_bsky import ALICE, APP_PASSWORD, FakeBluesky
from fake_x import FakeX
from bot_process import BotRunner, keyed_commits, status_json


@pytest.fixture
def networks(tmp_path, fake_hub):
    with FakeX() as x, FakeBluesky() as sky:
        x.add_user("dora", posts=180)
        bot = BotRunner(tmp_path, x, fake_hub, extra_env=sky.env())
        bot.write_config(sources=["x", "bluesky"])
        yield bot, x, sky


@pytest.mark.slow
def test_a_mention_on_each_network_is_answered_there_once_and_priced_there(networks, fake_hub):
    bot, x, sky = networks
    on_x = x.add_mention("carol", "@huggingtweets train @dora")
    on_bluesky = sky.add_mention("erin.bsky.social", f"train @{ALICE}")
    result = bot.run_ok()
    assert APP_PASSWORD not in result.stdout + result.stderr

    [x_reply] = bot.replies_to(on_x)
    assert "huggingtweets/dora" in x_reply
    [sky_reply] = sky.replies
    assert sky_reply["parent"] == on_bluesky
    assert "huggingtweets/alice.bsky.social" in sky_reply["record"]["text"]
    assert not [p for p in x.posted if "alice.bsky.social" in p["text"]]  # nothing crosses networks
    assert {"huggingtweets/dora", "huggingtweets/alice.bsky.social"} <= set(fake_hub.repos)

    bot.run_ok()  # a second pass answers nothing again, on either network
    assert len(bot.replies_to(on_x)) == 1 and len(sky.replies) == 1

    requests = {r["handles"][0]: r for r in status_json(bot)["requests"]}
    assert requests["dora"]["spend_usd"] > 0.9  # 180 posts read on X, and a reply with a link
    assert requests[ALICE]["spend_usd"] == 0  # Bluesky bills nothing


@pytest.mark.slow
def test_a_mention_on_bluesky_names_bluesky_handles(networks):
    bot, x, sky = networks
    sky.add_mention("erin.bsky.social", "train @dora")  # an X handle, asked on Bluesky
    bot.run_ok()
    [reply] = sky.replies
    assert "not a handle" in reply["record"]["text"] and "domain name" in reply["record"]["text"]
    assert x.posted == []


@pytest.mark.slow
def test_a_crash_at_every_step_on_bluesky_loses_nothing_and_replies_once(networks, fake_hub):
    """kill -9 the bot at each step in turn, restarting it after each crash; then let it finish."""
    from test_bot import CRASH_POINTS

    bot, x, sky = networks
    train = sky.add_mention("erin.bsky.social", f"train @{ALICE}")
    help_ = sky.add_mention("dave.bsky.social", "help")
    for point in CRASH_POINTS:
        crashed = bot.run(failpoint=point)
        assert crashed.returncode == -9, f"no crash at {point}: {crashed.stderr[-2000:]}"
    bot.run_ok()

    assert sorted(r["parent"] for r in sky.replies) == sorted([train, help_])  # one reply each
    assert set(bot.states().values()) == {"done"} and len(bot.states()) == 2
    assert len(keyed_commits(fake_hub, f"huggingtweets/{ALICE}")) == 1
    assert x.posted == []


@pytest.mark.slow
def test_opting_out_on_bluesky_deletes_that_persons_models_only(networks, fake_hub):
    """alice.bsky.social's opt-out removes her models, not those of @alice on X, a different person."""
    bot, x, sky = networks
    for name in (ALICE, f"{ALICE}-bob.bsky.social", "alice", "alice-dora"):
        fake_hub.create_repo(f"huggingtweets/{name}")
    opt_out = sky.add_mention(ALICE, "opt out")
    bot.run_ok()
    [reply] = [r["record"]["text"] for r in sky.replies if r["parent"] == opt_out]
    assert "opted out" in reply and "deleted 2 models" in reply
    assert set(fake_hub.repos) == {"huggingtweets/alice", "huggingtweets/alice-dora"}

    again = sky.add_mention("erin.bsky.social", f"train @{ALICE}")
    on_x = x.add_mention("carol", "@huggingtweets train @alice")  # X's alice has not opted out
    x.add_user("alice", posts=150)
    bot.run_ok()
    [refused] = [r["record"]["text"] for r in sky.replies if r["parent"] == again]
    assert "opted out" in refused and f"huggingtweets/{ALICE}" not in fake_hub.repos
    [answer] = bot.replies_to(on_x)
    assert "opted out" not in answer
