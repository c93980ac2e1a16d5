"""The ``general.*`` keys of a converted GGUF: a model's name, size label, license, tags, ... found by heuristics.

convert_hf_to_gguf.py fills these from four places (gguf-py ``metadata.py``), earlier sources winning:

1. the YAML front matter of ``README.md`` (the model card): ``license``, ``license_link``, ``tags`` +
   ``pipeline_tag``, ``language``, ``base_model``, ``datasets``, and llama.cpp's own ``name`` / ``model_name`` / ...;
2. ``config.json``'s ``"_name_or_path"`` if it looks like a hub id (at most one ``/``), e.g.
   ``"microsoft/Phi-3.5-mini-instruct"``;
3. the name of the model directory;
4. ``generation_config.json`` for the recommended sampling settings (``general.sampling.*``).

A hub id is cut at ``-`` into parts that are classified (:func:`model_id_components`)::

    microsoft / Phi - 3.5     - mini       - instruct
    org         basename      size label   finetune        ->  name "Phi 3.5 Mini Instruct", basename "Phi-3.5",
                (+ version)                                    size_label "mini", finetune "instruct",
                                                               organization "Microsoft"

The display name is the id with ``-`` turned into spaces and lower-case words capitalized (:func:`id_to_title`).
If nothing gives a size label, it is computed from the parameter count: ``"3.8B"``, ``"40M"``, ...
Note that the name of a converted Phi-3 matters to llama.cpp: its tokenizer sets ``rstrip`` on Phi-3's special
tokens only if ``general.name`` contains ``phi-3`` or ``phi3`` (lower-cased), which "Phi 3.5 Mini Instruct" does not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RefllmError
from ..gguf import Value, ValueType


@dataclass
class ModelCard:
    """The authorship metadata, one attribute per ``general.*`` key (``None``: not written)."""

    sampling: dict[str, Any] = field(default_factory=dict)  # generation_config key -> value
    name: str | None = None
    author: str | None = None
    version: str | None = None
    organization: str | None = None
    finetune: str | None = None
    basename: str | None = None
    description: str | None = None
    quantized_by: str | None = None
    size_label: str | None = None
    url: str | None = None
    doi: str | None = None
    uuid: str | None = None
    repo_url: str | None = None
    source_url: str | None = None
    source_doi: str | None = None
    source_uuid: str | None = None
    source_repo_url: str | None = None
    license: Any = None
    license_name: str | None = None
    license_link: str | None = None
    base_models: list[dict] | None = None
    tags: list | None = None
    languages: list | None = None
    datasets: list[dict] | None = None


# generation_config.json key(s) -> (general.sampling.* key, GGUF type)
SAMPLING_KEYS = [
    (("sequence",), "sequence", ValueType.STRING),
    (("top_k",), "top_k", ValueType.INT32),
    (("top_p",), "top_p", ValueType.FLOAT32),
    (("min_p",), "min_p", ValueType.FLOAT32),
    (("xtc_probability",), "xtc_probability", ValueType.FLOAT32),
    (("xtc_threshold",), "xtc_threshold", ValueType.FLOAT32),
    (("temperature",), "temp", ValueType.FLOAT32),
    (("penalty_last_n",), "penalty_last_n", ValueType.INT32),
    (("penalty_repeat", "repetition_penalty"), "penalty_repeat", ValueType.FLOAT32),
    (("mirostat",), "mirostat", ValueType.INT32),
    (("mirostat_tau",), "mirostat_tau", ValueType.FLOAT32),
    (("mirostat_eta",), "mirostat_eta", ValueType.FLOAT32),
]


def id_to_title(text: str) -> str:
    """``"Phi-3.5-mini-instruct"`` -> ``"Phi 3.5 Mini Instruct"``: hyphens become spaces, all-lower-case words are
    capitalized unless they are versions (``v2``) or start with a digit (``4k``)."""
    words = text.strip().replace("-", " ").split()
    return " ".join(w.title() if w.islower() and not re.match(r"^(v\d+(?:\.\d+)*|\d.*)$", w) else w for w in words)


_SIZE = re.compile(r"(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)", re.IGNORECASE)


def model_id_components(model_id: str | None, total_params: int = 0):
    """Split a hub id into ``(name, organization, basename, finetune, version, size_label)`` (each may be None).

    Each ``-``-separated part of the name is classified: a version (``3.5``, ``v2``), a quantization type (``Q4_K``,
    ``F16``), a size (``7B``, ``8x7B``, ``mini``; a number-size far from the real parameter count, like ``4k`` or
    ``128k``, is a *finetune* such as a context length), a known finetune word (``chat``, ``instruct``, ``vision``).
    Leading unclassified parts and versions form the basename, later unclassified parts join the finetune.
    """
    if model_id is None:
        return None, None, None, None, None, None
    if " " in model_id:  # a human-readable name, not an id
        return model_id, None, None, None, None, None
    if "/" in model_id:
        org, full_name = model_id.split("/", 1)
    else:
        org, full_name = None, model_id
    if org is not None and org.startswith("."):  # "./model", "../model"
        org = None

    parts = [p for p in full_name.split("-") if p]
    kinds: list[set[str]] = [set() for _ in parts]
    for i, part in enumerate(parts):
        if re.fullmatch(r"(v|iter)?\d+([.]\d+)*", part, re.IGNORECASE):
            kinds[i].add("version")
        elif re.fullmatch(r"i?q\d(_\w)*|b?fp?(16|32)", part, re.IGNORECASE):
            kinds[i].add("type")
            parts[i] = part.upper()
        elif i > 0 and _SIZE.fullmatch(part):
            part = part.replace("_", ".")
            if part[-1].isdecimal():  # bloom-7b1 -> 7.1b
                part = part[:-2] + "." + part[-1] + part[-2]
            if len(part) > 1 and part[-2].isdecimal() and part[-1] in "kmbt":
                part = part[:-1] + part[-1].upper()
            if total_params != 0:
                try:
                    label_params = float(part[:-1]) * pow(1000, " KMBT".find(part[-1]))
                    if (total_params < 0 and label_params < abs(total_params) // 8) or (
                            total_params > 0 and abs(label_params - total_params) > 7 * total_params // 8):
                        kinds[i].add("finetune")  # most likely a context length
                        part = part[:-1] + part[-1].lower()
                except ValueError:
                    pass
            if not kinds[i]:
                kinds[i].add("size_label")
            parts[i] = part
        elif i > 0 and re.fullmatch(r"chat|instruct|vision|lora", part, re.IGNORECASE):
            kinds[i].add("type" if total_params < 0 and part.lower() == "lora" else "finetune")

    # a number-based size label makes word-based ones ("mini") plain words
    if any(c.isdecimal() for p, k in zip(parts, kinds) if "size_label" in k for c in p):
        for p, k in zip(parts, kinds):
            if "size_label" in k and all(c.isalpha() for c in p):
                k.remove("size_label")

    at_start = True
    for p, k in zip(parts, kinds):
        if at_start and ((not k and p[0].isalpha()) or "version" in k):
            k.add("basename")
        else:
            at_start = False
            if not k:
                k.add("finetune")
    for p, k in zip(reversed(parts), reversed(kinds)):  # a trailing version is not part of the basename
        if "basename" in k and len(k) > 1:
            k.remove("basename")
        else:
            break

    basename = "-".join(p for p, k in zip(parts, kinds) if "basename" in k) or None
    size_label = "-".join(dict.fromkeys(p for p, k in zip(parts, kinds) if "size_label" in k)) or None
    finetune = "-".join(p for p, k in zip(parts, kinds) if "finetune" in k) or None
    version = "-".join(p for p, k in zip(parts, kinds) if "version" in k and "basename" not in k) or None
    if size_label is None and finetune is None and version is None:
        basename = None  # too ambiguous
    return full_name, org, basename, finetune, version, size_label


def read_front_matter(readme: Path) -> dict:
    """The YAML front matter of a model card (between the first two ``---`` lines), or ``{}``."""
    if not readme.is_file():
        return {}
    lines = readme.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "---":
        return {}
    body = []
    for line in lines[1:]:
        if line == "---":
            break
        body.append(line)
    text = "\n".join(body) + "\n"
    text = text.replace("- no\n", '- "no"\n').replace("\t", "  ")  # YAML's "Norway problem"; tabs
    import yaml  # PyYAML comes with the gguf package

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RefllmError(f"{readme}: the YAML front matter is invalid: {e}") from None
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _hub_entry(item, total_params: int, what: str) -> dict:
    """A base model or dataset entry of the model card: a hub id, a URL or a dict."""
    if isinstance(item, dict):
        return item
    if not isinstance(item, str):
        return {}
    entry: dict = {}
    model_id = item
    if item.startswith(("http://", "https://", "ssh://")):
        entry["repo_url"] = item
        m = re.match(r"https?://huggingface.co/([^/]+/[^/]+)$", item) if "huggingface.co" in item else None
        if not m:
            return entry
        model_id = m.group(1)
    name, org, _, _, version, _ = model_id_components(model_id, total_params)
    if name is not None:
        entry["name"] = id_to_title(name)
    if org is not None:
        entry["organization"] = id_to_title(org)
    if version is not None:
        entry["version"] = version
    if model_id is item and org is not None and name is not None:
        entry["repo_url"] = f"https://huggingface.co/{org}/{name}"
    return entry


def model_card(model_dir: Path, total_params: int, model_name: str | None = None) -> ModelCard:
    """Collect the authorship metadata of ``model_dir`` as convert_hf_to_gguf.py does."""
    card = ModelCard()
    front = read_front_matter(model_dir / "README.md")

    def take(attr: str, key: str):
        if key in front and getattr(card, attr) is None:
            setattr(card, attr, front.get(key))

    def extend(attr: str, key: str):
        value = front.get(key)
        if value is None:
            return
        current = getattr(card, attr) or []
        current.extend([value] if isinstance(value, str) else value if isinstance(value, list) else [])
        setattr(card, attr, current)

    for attr in ("name", "author", "version", "organization", "description", "finetune", "basename", "size_label"):
        take(attr, attr)
    for attr, key in (("source_url", "url"), ("source_doi", "doi"), ("source_uuid", "uuid"),
                      ("source_repo_url", "repo_url")):
        take(attr, key)
    for attr in ("name", "author", "version", "organization", "description", "finetune", "basename", "size_label",
                 "url", "doi", "uuid", "repo_url"):
        take(attr if attr not in ("url", "doi", "uuid", "repo_url") else "source_" + attr, "model_" + attr)
    take("author", "model_creator")
    take("basename", "model_type")
    for attr, keys in (("base_models", ("base_model", "base_models", "base_model_sources")),
                       ("datasets", ("datasets", "dataset", "dataset_sources"))):
        if any(k in front for k in keys):
            value = front.get(keys[0], front.get(keys[1], front.get(keys[2])))
            items = [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []
            setattr(card, attr, (getattr(card, attr) or []) + [_hub_entry(x, total_params, attr) for x in items])
    take("license", "license")
    take("license_name", "license_name")
    take("license_link", "license_link")
    extend("tags", "tags")
    extend("tags", "pipeline_tag")
    extend("languages", "languages")
    extend("languages", "language")

    def from_id(model_id: str):
        name, org, basename, finetune, version, size_label = model_id_components(model_id, total_params)
        if card.name is None and name is not None:
            card.name = id_to_title(name)
        for attr, value in (("organization", org and id_to_title(org)), ("basename", basename),
                            ("finetune", finetune), ("version", version), ("size_label", size_label)):
            if getattr(card, attr) is None and value is not None:
                setattr(card, attr, value)

    name_or_path = _read_json(model_dir / "config.json").get("_name_or_path")
    if isinstance(name_or_path, str) and name_or_path.count("/") <= 1:
        from_id(name_or_path)
    from_id(model_dir.name)

    generation = _read_json(model_dir / "generation_config.json")
    for keys, key, _ in SAMPLING_KEYS:
        for k in keys:
            if k in generation:
                card.sampling[key] = generation[k]
                break
    if model_name is not None:
        card.name = model_name
    if card.name is None:
        card.name = model_dir.name
    return card


def size_label(total_params: int) -> str:
    """``3821079552`` -> ``"3.8B"``: the parameter count with at least two significant digits (gguf-py
    ``model_weight_count_rounded_notation``)."""
    for limit, scale, suffix in ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M")):
        if total_params > limit:
            break
    else:
        scale, suffix = 1e-3, "K"
    scaled = total_params * scale
    digits = max(2 - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{digits}f}{suffix}"


def _scalar(vtype: ValueType, value) -> Value:
    if vtype == ValueType.STRING:
        return Value(vtype, str(value))
    if vtype == ValueType.FLOAT32:
        return Value.float32(value)
    return Value(vtype, int(value))


def _string_array(key: str, items) -> Value:
    if not all(isinstance(x, str) for x in items):
        raise RefllmError(f"{key}: expected a list of strings, got {items!r}")
    return Value.array(ValueType.STRING, list(items))


def general_metadata(card: ModelCard) -> dict[str, Value]:
    """The ``general.*`` key/value pairs in the order convert_hf_to_gguf.py writes them (empty strings and lists
    are not written)."""
    out: dict[str, Value] = {}

    def string(key: str, value):
        if value:  # GGUFWriter.add_string skips empty strings
            out[key] = Value.string(value)

    for _, key, vtype in SAMPLING_KEYS:
        if key in card.sampling:
            out[f"general.sampling.{key}"] = _scalar(vtype, card.sampling[key])
    for attr, key in (("name", "name"), ("author", "author"), ("version", "version"),
                      ("organization", "organization"), ("finetune", "finetune"), ("basename", "basename"),
                      ("description", "description"), ("quantized_by", "quantized_by"),
                      ("size_label", "size_label")):
        string(f"general.{key}", getattr(card, attr))
    if card.license is not None:
        string("general.license", ",".join(card.license) if isinstance(card.license, list) else card.license)
    string("general.license.name", card.license_name)
    string("general.license.link", card.license_link)
    for attr in ("url", "doi", "uuid", "repo_url"):
        string(f"general.{attr}", getattr(card, attr))
    for attr in ("url", "doi", "uuid", "repo_url"):
        string(f"general.source.{attr}", getattr(card, "source_" + attr))
    for attr, prefix in (("base_models", "general.base_model"), ("datasets", "general.dataset")):
        entries = getattr(card, attr)
        if entries is None:
            continue
        out[f"{prefix}.count"] = Value.uint32(len(entries))
        for i, entry in enumerate(entries):
            for field_name in ("name", "author", "version", "organization", "description", "url", "doi", "uuid",
                               "repo_url"):
                if field_name in entry:
                    string(f"{prefix}.{i}.{field_name}", entry[field_name])
    if card.tags:
        out["general.tags"] = _string_array("general.tags", card.tags)
    if card.languages:
        out["general.languages"] = _string_array("general.languages", card.languages)
    return out
