"""The demo's live view, read through the product's own read API (and the
WebSocket player's log): top players, the contest's top three, the followed
entry's rank and points, the latest WebSocket frame. One clean block per call;
on a terminal the screen is redrawn in place.

Usage: python3 scripts/demo-view.py API_ADDR MATCH CONTEST ENTRY WS_LOG
"""
import json
import os
import sys
import urllib.error
import urllib.request

api, match_id, contest, entry, ws_log = sys.argv[1:6]


def get(path):
    try:
        with urllib.request.urlopen(f"http://{api}{path}", timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.load(error)
        except ValueError:
            return error.code, {}
    except (urllib.error.URLError, OSError, ValueError) as error:
        return 0, {"error": str(error)}


def points(value):
    return f"{value:g}" if isinstance(value, (int, float)) else "-"


lines = []
status, players = get(f"/v1/matches/{match_id}/players")
if status == 200:
    lines.append(f"match {match_id} · version {players['version']}")
    ranked = sorted(players["players"].items(), key=lambda item: (-item[1], item[0]))
    lines.append(f"  {'top players':<26}{'points':>8}")
    for name, value in ranked[:5]:
        lines.append(f"  {name:<26}{value:>8}")
else:
    lines.append(f"match {match_id} · waiting for the first ball")

status, page = get(f"/v1/contests/{contest}/leaderboard?limit=3")
if status == 200:
    lines.append(f"contest {contest} · version {page['version']} · {page['total']} entries")
    lines.append(f"  {'rank':>5}  {'entry':<10}{'user':<10}{'points':>8}")
    for row in page["entries"]:
        lines.append(f"  {row['rank']:>5}  {row['entry_id']:<10}{row['user_id']:<10}{points(row['points']):>8}")
else:
    lines.append(f"contest {contest} · {page.get('error', 'not yet ranked')}")

status, mine = get(f"/v1/contests/{contest}/entries/{entry}")
if status == 200:
    lines.append(
        f"entry {entry} ({mine['user_id']}): rank {mine['rank']} of {mine['total']}, "
        f"{points(mine['points'])} points"
    )
else:
    lines.append(f"entry {entry}: {mine.get('error', 'not yet ranked')}")

frames = []
if os.path.exists(ws_log):
    with open(ws_log, encoding="utf-8", errors="replace") as log:
        frames = [line.rstrip("\n") for line in log if line.strip()]
latest = frames[-1] if frames else "none yet"
lines.append(f"WebSocket player ({len(frames)} frames), latest: {latest[:110]}")

if sys.stdout.isatty():
    sys.stdout.write("\033[H\033[2J")
print("\n".join(lines))
sys.stdout.flush()
