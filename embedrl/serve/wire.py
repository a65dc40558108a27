"""Reading requests: JSON bodies under a size limit, and inputs (texts, content parts, chats) into Items.

Everything a request holds is checked before it is decoded: the body's length (from its
header, then as it streams) before JSON parsing; each image's base64 length before
base64-decoding, its byte size, format and pixel count before the pixels are
(`embedrl.core.media`); counts of inputs, frames and characters. Images arrive only as data
URLs or bare base64; URLs are never fetched and nothing names a file, so no path from a
request reaches the file system. Every refusal is a `RequestError`: an HTTP status and a
message the client can act on. The forms are those `embedrl.client.item_input` writes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from embedrl.core.items import Item
from embedrl.core.media import ImageLimits, ImageRejected, ImageTooLarge, check_size, open_untrusted
from embedrl.core.tcot import TCoT, parse_tcot


class RequestError(Exception):
    """A request the server refuses: HTTP `status` (4xx) and a message for the client."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.message, self.status, self.kind, self.param = message, status, kind, param


@dataclass(frozen=True)
class Limits:
    """What one request may hold (defaults fit a shared GPU server; `embedrl serve --help` sets them)."""

    max_body_mb: float = 64.0
    max_inputs: int = 256
    max_text_chars: int = 20_000
    max_frames: int = 64
    max_k: int = 1000
    max_new_tokens: int = 2048
    max_samples: int = 16
    image: ImageLimits = field(default_factory=ImageLimits)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


async def read_json(request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object, refusing a body over the limit before reading (or while streaming) it."""
    declared = request.headers.get("content-length")
    too_big = RequestError(f"the request body is over the limit of {limits.max_body_mb:g} MB", 413)
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise too_big
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as e:
        raise RequestError(f"the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    return body


def image_from(ref: Any, where: str, limits: Limits) -> Image.Image:
    """An image given as a data URL, bare base64, or `{"url": ...}` of either; decoded under the limits."""
    if isinstance(ref, dict):
        ref = ref.get("url")
    if not isinstance(ref, str) or not ref:
        raise RequestError(f"{where}: an image is a data URL or base64 string", param=where)
    if ref.startswith(("http://", "https://", "file:", "/")):
        raise RequestError(f"{where}: images are not fetched from URLs or paths; send the bytes as a data URL "
                           "(data:image/png;base64,...) or base64", param=where)
    if ref.startswith("data:"):
        header, sep, ref = ref.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError(f"{where}: a data URL must be base64 (data:image/png;base64,...)", param=where)
    try:
        check_size(len(ref) * 3 // 4, limits.image)  # before decoding anything
        data = base64.b64decode(ref, validate=True)
        return open_untrusted(data, limits.image)
    except binascii.Error:
        raise RequestError(f"{where}: the image is not valid base64", param=where) from None
    except ImageRejected as e:
        raise RequestError(f"{where}: {e}", 413 if isinstance(e, ImageTooLarge) else 400, param=where) from None


def _text(value: Any, where: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{where}: expected a string", param=where)
    if len(value) > limits.max_text_chars:
        raise RequestError(f"{where}: {len(value)} characters, over the limit of {limits.max_text_chars}",
                           param=where)
    return value


def parse_input(value: Any, where: str, limits: Limits) -> tuple[Item, TCoT | None]:
    """One input (a string, or a list of content parts) as an Item and the T-CoT it carries (or None)."""
    if isinstance(value, str):
        parts = [{"type": "text", "text": value}]
    elif isinstance(value, list) and not any(isinstance(p, int) for p in value):
        parts = value
    else:
        raise RequestError(f"{where}: an input is a string or a list of content parts (token arrays are not "
                           "accepted)", param=where)
    texts, images, frames, instruction, tcot = [], [], [], "", None
    for k, part in enumerate(parts):
        at = f"{where}[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(_text(part.get("text"), at, limits))
        elif kind == "image_url":
            images.append(part.get("image_url"))
        elif kind == "frames":
            if not isinstance(part.get("frames"), list) or not part["frames"]:
                raise RequestError(f"{at}: frames is a non-empty list of images", param=at)
            frames.extend(part["frames"])
        elif kind == "instruction":
            instruction = _text(part.get("text"), at, limits)
        elif kind == "tcot":
            raw = _text(part.get("text"), at, limits)
            tcot = parse_tcot(raw)
            tcot.raw = raw
        else:
            raise RequestError(f"{at}: unknown content part {kind!r}; expected text, image_url, frames, "
                               "instruction or tcot", param=at)
    if len(images) > 1 and not frames:  # several image parts: a video's frames, in order
        frames, images = images, []
    if len(images) > 1 or (images and frames):
        raise RequestError(f"{where}: one image, or one video's frames, per input", param=where)
    if len(frames) > limits.max_frames:
        raise RequestError(f"{where}: {len(frames)} frames, over the limit of {limits.max_frames}", param=where)
    text = "\n".join(texts)
    if not text.strip() and not images and not frames:
        raise RequestError(f"{where}: the input is empty", param=where)
    image = image_from(images[0], f"{where} image", limits) if images else None
    decoded = [image_from(f, f"{where} frame {j}", limits) for j, f in enumerate(frames)] or None
    return Item(text=text, image=image, frames=decoded, instruction=instruction), tcot


def parse_inputs(body: dict[str, Any], limits: Limits) -> list[tuple[Item, TCoT | None]]:
    """The inputs of an embeddings request: OpenAI's `input`, or vLLM's chat-style `messages` (one input)."""
    if "messages" in body:
        return [parse_input(chat_parts(body["messages"]), "messages", limits)]
    value = body.get("input")
    if value is None:
        raise RequestError("the request needs `input` (a string or a list) or `messages`", param="input")
    values = [value] if isinstance(value, str) else value
    if isinstance(values, list) and values and all(isinstance(v, int) for v in values):
        values = [values]  # one token array: refused below with a message
    if not isinstance(values, list) or not values:
        raise RequestError("`input` is a non-empty string or list", param="input")
    if values and all(isinstance(v, dict) for v in values):  # one input given as a bare list of parts
        values = [values]
    if len(values) > limits.max_inputs:
        raise RequestError(f"{len(values)} inputs, over the limit of {limits.max_inputs} per request; split them",
                           param="input")
    return [parse_input(v, f"input[{i}]", limits) for i, v in enumerate(values)]


def chat_parts(messages: Any) -> list[dict[str, Any]]:
    """vLLM's embeddings `messages` as one input's content parts: system text is the instruction."""
    parts: list[dict[str, Any]] = []
    for role, content in chat_contents(messages):
        if role == "system":
            parts += [{"type": "instruction", "text": p.get("text", "")} for p in content if p.get("type") == "text"]
        else:
            parts += content
    return parts


def chat_contents(messages: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """Chat messages as (role, content parts), a string content as one text part."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("`messages` is a non-empty list of {role, content}", param="messages")
    out = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant"):
            raise RequestError(f"messages[{i}]: role must be system, user or assistant", param="messages")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
            raise RequestError(f"messages[{i}]: content is a string or a list of content parts", param="messages")
        out.append((role, content))
    return out


def parse_chat(messages: Any, limits: Limits) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """An OpenAI chat as a reasoner takes it: messages with image placeholders, and the images in order."""
    out, images = [], []
    for i, (role, content) in enumerate(chat_contents(messages)):
        parts = []
        for k, part in enumerate(content):
            at = f"messages[{i}].content[{k}]"
            if part.get("type") == "text":
                parts.append({"type": "text", "text": _text(part.get("text"), at, limits)})
            elif part.get("type") == "image_url":
                if len(images) >= limits.max_frames:
                    raise RequestError(f"{at}: over the limit of {limits.max_frames} images", param="messages")
                images.append(image_from(part.get("image_url"), at, limits))
                parts.append({"type": "image"})
            else:
                raise RequestError(f"{at}: unknown content part {part.get('type')!r}; expected text or image_url",
                                   param="messages")
        out.append({"role": role, "content": parts})
    return out, images


def int_field(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"`{name}` must be an integer from {low} to {high}", param=name)
    return value
