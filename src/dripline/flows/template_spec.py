"""A template in a flow file: name, language and every parameter Meta lets a send fill.

    template:
      name: order_update            # an approved template
      language: en_US
      body_params: ["{name}", "{plan}"]          # {{1}}, {{2}} ... or, for a template
      named_params: {first_name: "{name}"}       # created with named parameters
      header: {text: "{plan}"}                   # or {image: https://...}, {video: ...},
                                                 # {document: ..., filename: x.pdf}
      buttons:
        - {index: 0, payload: "yes"}             # quick-reply button: its payload
        - {index: 1, url_suffix: "{token}"}      # URL button: appended to its URL

Meta's references: send template messages and template components
(https://developers.facebook.com/documentation/business-messaging/whatsapp/templates/components,
.../templates/overview#parameter-formats). Text parameters obey Meta's whitespace rule
(`dripline.flows.params`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dripline.flows.params import literal_problem
from dripline.flows.placeholders import placeholders_in

__all__ = ["ButtonSpec", "HeaderSpec", "TemplateSpec"]

# Meta's template names: lowercase letters, digits and underscores.
_TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")
# Meta's language codes: `en`, `en_US`, `zh_Hant`, `fil`.
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2}|_[A-Z][a-z]{3})?")
# Named parameters: lowercase letters, digits and underscores (templates/components).
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HEADER_TEXT_LIMIT = 60  # a text header holds at most 60 characters (components page)
_MEDIA = ("image", "video", "document")
_MAX_BUTTONS = 10  # Meta: up to 10 buttons in a template


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _text_param(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} is empty; WhatsApp rejects empty parameters")
    placeholders_in(value)
    problem = literal_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    return value


class HeaderSpec(_Model):
    """Exactly one of `text`, `image`, `video`, `document` (a media link)."""

    text: str | None = None
    image: str | None = None
    video: str | None = None
    document: str | None = None
    filename: str | None = None
    parameter_name: str | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderSpec:
        given = [k for k in ("text", *_MEDIA) if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, image, video or document")
        if self.text is not None:
            _text_param(self.text, "the header text")
            if len(self.text) > _HEADER_TEXT_LIMIT:
                raise ValueError(f"the header text is over {_HEADER_TEXT_LIMIT} characters")
        else:
            link = getattr(self, given[0])
            placeholders_in(link)
            if not link.startswith(("https://", "http://", "{")):
                raise ValueError(f"the {given[0]} must be a link (https://...)")
        if self.filename is not None and self.document is None:
            raise ValueError("filename only applies to a document header")
        if self.parameter_name is not None:
            if self.text is None:
                raise ValueError("parameter_name only applies to a text header")
            _check_name(self.parameter_name)
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("text", *_MEDIA) if getattr(self, k) is not None)

    @property
    def value(self) -> str:
        value: str = getattr(self, self.kind)
        return value


class ButtonSpec(_Model):
    """A button parameter: a quick-reply `payload` or a URL button's `url_suffix`."""

    index: int = Field(ge=0, lt=_MAX_BUTTONS)
    payload: str | None = None
    url_suffix: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ButtonSpec:
        if (self.payload is None) == (self.url_suffix is None):
            raise ValueError("give exactly one of payload (quick reply) or url_suffix (URL)")
        value = self.payload if self.payload is not None else self.url_suffix
        assert value is not None
        if not value.strip():
            raise ValueError("the button parameter is empty")
        placeholders_in(value)
        if self.url_suffix is not None:
            # Sent as a `text` parameter (payloads.py), so Meta's rule for parameter
            # text holds (132018); it is also appended to a URL, where a line break or a
            # tab could never work. A quick-reply payload is a `payload` parameter:
            # Meta documents no such rule for it.
            _text_param(self.url_suffix, f"button {self.index} url_suffix")
        return self

    @property
    def sub_type(self) -> str:
        return "quick_reply" if self.payload is not None else "url"

    @property
    def value(self) -> str:
        return self.payload if self.payload is not None else (self.url_suffix or "")


def _check_name(name: str) -> str:
    if not _PARAM_NAME.fullmatch(name):
        raise ValueError(
            f"parameter name {name!r} must be lowercase letters, digits and underscores"
        )
    return name


class TemplateSpec(_Model):
    """An approved WhatsApp template: the only message a closed 24-hour window accepts."""

    name: str
    language: str = "en_US"
    body_params: tuple[str, ...] = ()
    named_params: dict[str, str] = Field(default_factory=dict)
    header: HeaderSpec | None = None
    buttons: tuple[ButtonSpec, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TEMPLATE_NAME.fullmatch(value):
            raise ValueError(
                f"template name {value!r} must be lowercase letters, digits and underscores"
            )
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not _LANGUAGE.fullmatch(value):
            raise ValueError(f"language {value!r} is not a code like en, en_US or pt_BR")
        return value

    @field_validator("body_params")
    @classmethod
    def _params(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, param in enumerate(value):
            _text_param(param, f"body parameter {i + 1}")
        return value

    @field_validator("named_params")
    @classmethod
    def _named(cls, value: dict[str, str]) -> dict[str, str]:
        for name, param in value.items():
            _check_name(name)
            _text_param(param, f"parameter {name}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TemplateSpec:
        if self.body_params and self.named_params:
            raise ValueError(
                "give body_params (a template with {{1}}, {{2}}) or named_params "
                "(a template with named parameters), not both"
            )
        indexes = [b.index for b in self.buttons]
        if len(indexes) != len(set(indexes)):
            raise ValueError("two buttons have the same index")
        return self

    def text_params(self) -> list[str]:
        """Every text parameter (body, named, header text, URL button suffix): what
        Meta's whitespace rule applies to, and what enrollment values must satisfy."""
        texts = [*self.body_params, *self.named_params.values()]
        if self.header is not None and self.header.text is not None:
            texts.append(self.header.text)
        texts.extend(b.url_suffix for b in self.buttons if b.url_suffix is not None)
        return texts

    def all_params(self) -> list[str]:
        """Every parameter string that may hold placeholders (for required fields)."""
        texts = self.text_params()
        if self.header is not None and self.header.text is None:
            texts.append(self.header.value)
        texts.extend(b.payload for b in self.buttons if b.payload is not None)
        return texts
