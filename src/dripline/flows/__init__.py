"""Question flows: YAML files -> validated flows the dispatcher and the webhook drive.

from dripline.flows import load_flows
flows = load_flows(settings.flows_dir)
flow = flows.get(conv.flow)
msg = flow.message(conv, conv.purpose)
transition = flow.after_send(conv, conv.purpose, sent_at)
"""

from dripline.flows.base import (
    ChoiceRow,
    ConversationLike,
    Flow,
    FlowRegistry,
    InteractiveMessage,
    OutboundMessage,
    Question,
    TemplateButton,
    TemplateHeader,
    TemplateMessage,
    TextMessage,
    Transition,
)
from dripline.flows.durations import format_duration, parse_duration
from dripline.flows.enrollment import template_params, template_value_problem
from dripline.flows.flow import YamlFlow
from dripline.flows.loader import FlowFileError, parse_flow_text
from dripline.flows.model import FlowSpec, QuietHours, StepSpec, TemplateSpec
from dripline.flows.registry import CheckResult, FlowSet, check_flows, load_flows

__all__ = [
    "CheckResult",
    "ChoiceRow",
    "ConversationLike",
    "Flow",
    "FlowFileError",
    "FlowRegistry",
    "FlowSet",
    "FlowSpec",
    "InteractiveMessage",
    "OutboundMessage",
    "Question",
    "QuietHours",
    "StepSpec",
    "TemplateButton",
    "TemplateHeader",
    "TemplateMessage",
    "TemplateSpec",
    "TextMessage",
    "Transition",
    "YamlFlow",
    "check_flows",
    "format_duration",
    "load_flows",
    "parse_duration",
    "parse_flow_text",
    "template_params",
    "template_value_problem",
]
