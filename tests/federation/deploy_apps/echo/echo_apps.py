"""A throw-away ServerApp/ClientApp pair that exercises the deployment harness, not the search.

``server`` waits for ``num-nodes`` SuperNodes, sends each a ``query.echo`` and writes the replies
(each node's ``node_config``) to ``<out-dir>/result.json``. With ``mode = "fail"`` it raises; with
``mode = "hang"`` it writes its PID to ``<out-dir>/hang.pid`` and sleeps forever ignoring SIGTERM
and SIGINT, so only a SIGKILL from the harness can end it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


@client.query("echo")
def echo(msg: Message, context: Context) -> Message:
    """The node's config and the round number it was asked about."""
    reply = ConfigRecord({"node-config": json.dumps(dict(context.node_config)), "round": msg.content["cfg"]["round"]})
    return Message(RecordDict({"reply": reply}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Echo round, deliberate failure or deliberate hang, as ``mode`` says."""
    out = Path(str(context.run_config["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    mode = str(context.run_config["mode"])
    if mode == "fail":
        raise RuntimeError("deliberately broken ServerApp (mode = fail)")
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        (out / "hang.pid").write_text(str(os.getpid()))
        while True:
            time.sleep(1.0)
    want = int(context.run_config["num-nodes"])
    while len(nodes := sorted(grid.get_node_ids())) < want:
        time.sleep(0.2)
    msgs = [
        Message(RecordDict({"cfg": ConfigRecord({"round": 1})}), dst_node_id=n, message_type="query.echo")
        for n in nodes[:want]
    ]
    replies = [r for r in grid.send_and_receive(msgs, timeout=120) if r.has_content()]
    result = [
        {"node-config": json.loads(str(r.content["reply"]["node-config"])), "round": int(r.content["reply"]["round"])}
        for r in replies
    ]
    (out / "result.json").write_text(json.dumps(sorted(result, key=lambda d: d["node-config"]["partition-id"])))
