"""The flows the simulator runs: short timings (seconds), every path ending in a
terminal state, so a run settles. Loaded through the real flow loader."""

from __future__ import annotations

from functools import cache

from dripline.flows.flow import YamlFlow
from dripline.flows.loader import parse_flow_text
from dripline.flows.registry import FlowSet

__all__ = ["SIM_FLOWS", "sim_flows"]

SIM_FLOWS = {
    "checkin": """\
name: checkin
description: Three questions; the first two wait for a reply, with a reminder.
fallback: {name: sim_checkin, language: en_US}
steps:
  - id: goal
    text: "What do you want to achieve?"
    wait_for_reply: true
    reply_timeout: 30s
    reminder: {after: 10s, text: "Still there? What do you want to achieve?"}
    on_timeout: continue
    fallback: {name: sim_welcome, language: en_US}
  - id: setup
    after: 5s
    text: "Is your setup done?"
    wait_for_reply: true
    reply_timeout: 20s
    on_timeout: end
  - id: bye
    after: 2s
    text: "Thanks, that was all."
""",
    "nudge": """\
name: nudge
description: Two messages that wait for nothing; only the first has a template, so the
  second fails where the window is closed.
steps:
  - id: hello
    text: "Hello from the other flow."
    fallback: {name: sim_hello, language: en_US}
  - id: later
    after: 3s
    text: "And a second message."
""",
}


@cache
def sim_flows() -> FlowSet:
    flows = {}
    for name, text in SIM_FLOWS.items():
        loaded = parse_flow_text(text, f"<sim:{name}>", name)
        flows[name] = YamlFlow(loaded.spec, loaded.source)
    return FlowSet(flows)
