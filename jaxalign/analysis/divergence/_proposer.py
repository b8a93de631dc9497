"""Hypothesis proposer: sampled sentence pairs -> a prompt -> an LM's answer -> a deduplicated list.

Each of ``n_prompts`` prompts shows ``per_group`` divergent sentences as
"Group A" and as many convergent ones as "Group B", drawn without
replacement from the research split with a seeded generator (a new draw per
prompt, as the D5 proposer the study uses), and asks for hypotheses that
complete "Compared to Group B, a sentence in Group A ...", one per line.
The answer's bulleted or numbered lines are the hypotheses; they are
deduplicated across prompts (case, spacing and final punctuation ignored),
first wording kept.

The proposer is any callable ``prompt -> text``: a :class:`ChatEndpoint`
(any OpenAI-compatible ``/v1/chat/completions`` server: vLLM, llama.cpp's
``llama-server``, OpenAI, ...) or a local model,
``functools.partial(jaxalign.lm.generate, model, tokenizer, max_new_tokens=200)``.

Nothing is lost: a prompt whose proposer call fails (after the endpoint's
own retries) is recorded in ``Proposals.failures`` with its error, the
other prompts' answers are kept, and only when every prompt failed does
:func:`propose_hypotheses` raise, with the ``Proposals`` attached.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jaxalign._core.seeds import rng as _rng
from jaxalign._core.validation import check_int

__all__ = [
    "PROPOSER_TEMPLATE",
    "ChatEndpoint",
    "ChatError",
    "ProposerError",
    "Proposals",
    "parse_hypotheses",
    "propose_hypotheses",
    "proposer_prompt",
]

#: The proposer's prompt; ``{group_a}``, ``{group_b}`` (numbered sentences) and ``{n}`` are filled in.
PROPOSER_TEMPLATE = (
    "Here are two groups of sentences from a story.\n\n"
    "Group A:\n{group_a}\n\n"
    "Group B:\n{group_b}\n\n"
    "How do the sentences in Group A differ from those in Group B? Write {n} hypotheses, one per line, "
    'each starting with "- " and completing the phrase "Compared to Group B, a sentence in Group A ...", '
    "for example:\n"
    "- describes a strong emotion\n"
    "- mentions a physical action\n\n"
    "Hypotheses:\n"
)

_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d{1,3}[.)]|\(\d{1,3}\))\s+(.*\S)\s*$")
_LEAD = re.compile(r"^(?:compared to group b,?\s*)?(?:(?:a|each|the) sentences? in group a\s*)", re.I)


def proposer_prompt(divergent: Sequence[str], convergent: Sequence[str], n_hypotheses: int = 5,
                    template: str = PROPOSER_TEMPLATE) -> str:
    """The prompt for one proposer call (module doc): Group A = ``divergent``, Group B = ``convergent``."""
    for key in ("{group_a}", "{group_b}"):
        if key not in template:
            raise ValueError(f"template must contain {key}")
    number = lambda xs: "\n".join(f"{i + 1}. {s}" for i, s in enumerate(xs))  # noqa: E731
    return template.format(group_a=number(divergent), group_b=number(convergent), n=n_hypotheses)


def _key(h: str) -> str:
    return re.sub(r"\s+", " ", h.lower()).strip(" .;:!,")


def parse_hypotheses(text: str) -> list:
    """The hypotheses of one answer: its bulleted / numbered lines, cleaned, in order, deduplicated.

    Markers ``-``, ``*``, ``•``, ``1.``, ``1)``, ``(1)``; surrounding quotes,
    a repeated "Compared to Group B, a sentence in Group A" and a final
    period are removed; lines of fewer than 2 words or over 300 characters
    are dropped. Plain lines without a marker are not hypotheses.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    out, seen = [], set()
    for line in text.splitlines():
        m = _BULLET.match(line)
        if not m:
            continue
        h = m.group(1).strip().strip("\"'\u201c\u201d*` ").strip()
        h = _LEAD.sub("", h).strip().rstrip(".").strip()
        if len(h.split()) < 2 or len(h) > 300:
            continue
        k = _key(h)
        if k not in seen:
            seen.add(k)
            out.append(h)
    return out


@dataclass
class Proposals:
    """Result of :func:`propose_hypotheses`.

    Attributes
    ----------
    hypotheses : list of str
        Deduplicated over all answers, in order of first appearance.
    prompts : list of str
        Every prompt sent.
    responses : list of (str or None)
        The answer to each prompt (None where it failed).
    parsed : list of list of str
        The hypotheses parsed from each answer (before deduplication across answers).
    failures : list of (int, str)
        ``(prompt index, error message)`` of every failed prompt.
    """

    hypotheses: list = field(default_factory=list)
    prompts: list = field(default_factory=list)
    responses: list = field(default_factory=list)
    parsed: list = field(default_factory=list)
    failures: list = field(default_factory=list)


class ProposerError(RuntimeError):
    """Every proposer call failed; ``proposals`` holds the prompts and the errors."""

    def __init__(self, message: str, proposals: Proposals):
        super().__init__(message)
        self.proposals = proposals


def propose_hypotheses(divergent, convergent, proposer: Callable[[str], str], *, n_prompts: int = 5,
                       per_group: int = 5, n_hypotheses: int = 5, seed: int = 0,
                       template: str = PROPOSER_TEMPLATE) -> Proposals:
    """Ask ``proposer`` ``n_prompts`` times for hypotheses on fresh samples of the two groups (module doc).

    ``divergent`` / ``convergent``: the research split's sentences
    (``DivergenceSets.research``). ``per_group`` sentences of each per
    prompt (all of a smaller group).
    """
    for name, group in (("divergent", divergent), ("convergent", convergent)):
        if isinstance(group, str) or len(group) == 0:
            raise ValueError(f"{name} must be a non-empty list of sentences")
    divergent, convergent = list(divergent), list(convergent)
    if not callable(proposer):
        raise TypeError(f"proposer must be callable (prompt -> text), got {type(proposer).__name__}")
    n_prompts = check_int(n_prompts, "n_prompts", 1)
    per_group = check_int(per_group, "per_group", 1)
    n_hypotheses = check_int(n_hypotheses, "n_hypotheses", 1)
    gen = _rng(check_int(seed, "seed", 0), "divergence-proposer")
    out = Proposals()
    seen = set()
    for i in range(n_prompts):
        a = [divergent[j] for j in gen.choice(len(divergent), min(per_group, len(divergent)), replace=False)]
        b = [convergent[j] for j in gen.choice(len(convergent), min(per_group, len(convergent)), replace=False)]
        prompt = proposer_prompt(a, b, n_hypotheses, template)
        out.prompts.append(prompt)
        try:
            text = proposer(prompt)
            if not isinstance(text, str):
                raise TypeError(f"the proposer returned {type(text).__name__}, not str")
        except Exception as err:  # noqa: BLE001 - recorded, the other prompts go on
            out.responses.append(None)
            out.parsed.append([])
            out.failures.append((i, f"{type(err).__name__}: {err}"))
            continue
        out.responses.append(text)
        found = parse_hypotheses(text)
        out.parsed.append(found)
        for h in found:
            if _key(h) not in seen:
                seen.add(_key(h))
                out.hypotheses.append(h)
    if len(out.failures) == n_prompts:
        raise ProposerError(f"all {n_prompts} proposer calls failed; first error: {out.failures[0][1]}", out)
    if out.failures:
        warnings.warn(f"{len(out.failures)} of {n_prompts} proposer calls failed (Proposals.failures); "
                      f"first: {out.failures[0][1]}", RuntimeWarning, stacklevel=2)
    return out


class ChatError(RuntimeError):
    """A chat endpoint gave no usable answer. ``url``, ``attempts`` (one message per try), ``status``."""

    def __init__(self, url: str, attempts: list, status: int | None = None):
        self.url, self.attempts, self.status = url, list(attempts), status
        tries = "; ".join(f"try {i + 1}: {m}" for i, m in enumerate(attempts))
        super().__init__(f"{url}: no usable answer after {len(attempts)} tries ({tries})")


class ChatEndpoint:
    """An OpenAI-compatible chat-completions endpoint as a proposer: ``ChatEndpoint(url, model)(prompt) -> text``.

    Parameters
    ----------
    url : str
        The server's base URL (``http://127.0.0.1:8080/v1``; ``/chat/completions``
        is appended) or the full ``.../chat/completions`` URL.
    model : str
        The ``model`` field of the request.
    api_key : str, optional
        Sent as ``Authorization: Bearer ...`` (never read from the environment
        implicitly: pass ``os.environ["OPENAI_API_KEY"]`` yourself).
    timeout : float
        Seconds to wait for each request (connect and read).
    retries : int
        Further tries after a failed one: for connection errors, timeouts,
        HTTP 408 / 429 / 5xx, and answers that are not JSON or have no
        message (other HTTP errors, e.g. 401 or 404, fail at once).
    backoff, max_backoff : float
        Sleep ``min(max_backoff, backoff * 2**k)`` seconds before retry ``k + 1``
        (a ``Retry-After`` header of at most ``max_backoff`` seconds wins).
    temperature, max_tokens, system
        The request's sampling settings and an optional system message.

    Uses ``httpx2`` (the HTTP client huggingface_hub already installs).
    """

    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 1.0, max_backoff: float = 30.0, temperature: float = 0.7,
                 max_tokens: int = 512, system: str | None = None):
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"url must be an http(s) URL such as http://127.0.0.1:8080/v1, got {url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty str (the server's model name), got {model!r}")
        for name, value in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            bad = isinstance(value, bool) or not isinstance(value, (int, float))
            if bad or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, float(timeout)
        self.retries = check_int(retries, "retries", 0)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.temperature, self.max_tokens, self.system = temperature, check_int(max_tokens, "max_tokens", 1), system

    def __repr__(self) -> str:
        return f"ChatEndpoint({self.url!r}, model={self.model!r})"

    def request(self, prompt: str) -> dict:
        """The JSON body sent for ``prompt``."""
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        messages.append({"role": "user", "content": prompt})
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}

    def _wait(self, k: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** k)
        if retry_after:
            try:
                delay = min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass
        time.sleep(delay)

    def __call__(self, prompt: str) -> str:
        import httpx2

        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = self.request(prompt)
        attempts, status = [], None
        with httpx2.Client(timeout=self.timeout) as client:
            for k in range(self.retries + 1):
                retry_after = None
                try:
                    resp = client.post(self.url, json=body, headers=headers)
                except httpx2.TimeoutException:
                    attempts.append(f"no answer within {self.timeout:g} s (timeout)")
                except httpx2.TransportError as err:
                    attempts.append(f"connection failed: {type(err).__name__}: {err}")
                else:
                    status = resp.status_code
                    text = resp.text
                    if status != 200:
                        attempts.append(f"HTTP {status}: {text[:200]!r}")
                        if not (status in (408, 429) or status >= 500):
                            raise ChatError(self.url, attempts, status)
                        retry_after = resp.headers.get("retry-after")
                    else:
                        try:
                            return _message(json.loads(text))
                        except json.JSONDecodeError as err:
                            attempts.append(f"malformed JSON ({err.msg} at char {err.pos}): {text[:200]!r}")
                        except ValueError as err:
                            attempts.append(str(err))
                if k < self.retries:
                    self._wait(k, retry_after)
        raise ChatError(self.url, attempts, status)


def _message(answer) -> str:
    """The first choice's message content of a chat-completions answer, or ValueError saying what is missing."""
    if not isinstance(answer, dict):
        raise ValueError(f"the answer is JSON but not an object: {str(answer)[:200]!r}")
    if "error" in answer and "choices" not in answer:
        raise ValueError(f"the server answered with an error: {str(answer['error'])[:200]!r}")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"the answer has no choices: {json.dumps(answer)[:200]!r}")
    first = choices[0]
    content = first.get("message", {}).get("content") if isinstance(first, dict) else None
    if not isinstance(content, str):
        raise ValueError(f"the first choice has no message content: {json.dumps(first)[:200]!r}")
    return content
