"""Your own prompts as a probe suite: a list of texts, a `datasets.Dataset`, or a .txt / .jsonl / .parquet file.

Only analyzers whose definition holds on arbitrary text take them (`Analyzer.accepts_prompts`): sinks (Gu et al.
measure natural text), previous-token and duplicate-token (TransformerLens' `detect_head` runs on any prompt).
The others build probes with a known answer (repeated random tokens, needles, questions) and refuse them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from headscope.errors import HeadscopeError
from headscope.probes.suite import TokenSuite

PROMPT_FILE_TYPES = (".txt", ".jsonl", ".parquet")
MAX_PROMPT_FILE_BYTES = 256 * 1024 * 1024


def prompts_digest(texts: Sequence[str]) -> str:
    """A content hash of the texts themselves (the suite's probe_hash covers the token ids as well)."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()[:16]


def texts_from(prompts: Any, *, column: str | None = None) -> list[str]:
    """The texts of a list/tuple of strings or of a `datasets.Dataset` (its `column`, else the one text column)."""
    if isinstance(prompts, (str, bytes, Path)):
        raise HeadscopeError("prompts= takes a list of texts or a datasets.Dataset; for a file use "
                             "headscope.probes.read_prompt_file(path) (CLI: --prompts FILE)")
    if _is_dataset(prompts):
        return _dataset_texts(prompts, column)
    if not isinstance(prompts, (list, tuple)):
        raise HeadscopeError(f"prompts= got a {type(prompts).__name__}: pass a list of texts or a datasets.Dataset")
    return check_texts(prompts, "prompts")


def check_texts(texts: Sequence[Any], source: str) -> list[str]:
    """Every text a non-blank string, at least one of them."""
    if not texts:
        raise HeadscopeError(f"{source} holds no texts: pass at least one")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise HeadscopeError(f"{source} item {index} is a {type(text).__name__}, not a text: pass strings only")
        if not text.strip():
            raise HeadscopeError(f"{source} item {index} is blank: remove it")
    return list(texts)


def _is_dataset(obj: Any) -> bool:
    return type(obj).__name__ == "Dataset" and hasattr(obj, "column_names") and hasattr(obj, "features")


def _dataset_texts(dataset: Any, column: str | None) -> list[str]:
    names = list(dataset.column_names)
    if column is None:
        text_columns = [n for n in names if getattr(dataset.features[n], "dtype", None) in ("string", "large_string")]
        if "text" in names:
            column = "text"
        elif len(text_columns) == 1:
            column = text_columns[0]
        else:
            raise HeadscopeError(f"cannot tell which column holds the prompts (columns: {', '.join(names)}): "
                                 "pass prompt_column=<name>")
    if column not in names:
        raise HeadscopeError(f"the dataset has no column '{column}' (columns: {', '.join(names)}): pass prompt_column=<name>")
    return check_texts(list(dataset[column]), f"dataset column '{column}'")


def read_prompt_file(path: str | Path, *, column: str | None = None) -> list[str]:
    """Texts from a file: .txt (one text per line), .jsonl (one object per line) or .parquet, with a `text` column
    unless `column` names another. Strict: a blank line, a non-object line or a missing/non-string field is refused."""
    path = Path(path)
    if path.suffix not in PROMPT_FILE_TYPES:
        raise HeadscopeError(f"--prompts {path}: use a .txt (one text per line), .jsonl or .parquet file")
    if not path.is_file():
        raise HeadscopeError(f"--prompts {path} does not exist or is not a file: check the path")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise HeadscopeError(f"--prompts {path} is over {MAX_PROMPT_FILE_BYTES >> 20} MiB: pass fewer texts")
    if path.suffix == ".parquet":
        return _parquet_texts(path, column or "text")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise HeadscopeError(f"--prompts {path} is not UTF-8 text: re-save it as UTF-8") from None
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    lines = [line.removesuffix("\r") for line in lines]
    if path.suffix == ".txt":
        if column is not None:
            raise HeadscopeError("--prompt-column applies to .jsonl and .parquet files: a .txt file holds one text per line")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                raise HeadscopeError(f"--prompts {path} line {number} is blank: one text per line, no empty lines")
        return check_texts(lines, f"--prompts {path}")
    return _jsonl_texts(path, lines, column or "text")


def _jsonl_texts(path: Path, lines: list[str], column: str) -> list[str]:
    from headscope.strict_json import load_json

    texts = []
    for number, line in enumerate(lines, 1):
        record = load_json(line, origin=f"--prompts {path} line {number}", fix="one JSON object per line")
        if not isinstance(record, dict):
            raise HeadscopeError(f"--prompts {path} line {number} is not a JSON object: one object per line")
        if not isinstance(record.get(column), str) or not record[column].strip():
            raise HeadscopeError(f"--prompts {path} line {number} has no non-empty text field '{column}': "
                                 "add it or pass --prompt-column <name>")
        texts.append(record[column])
    return check_texts(texts, f"--prompts {path}")


def _parquet_texts(path: Path, column: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise HeadscopeError(f"--prompts {path} is not a readable parquet file ({str(err).splitlines()[0][:80]})") from None
    if column not in schema.names:
        raise HeadscopeError(f"--prompts {path} has no column '{column}' (columns: {', '.join(schema.names)}): "
                             "pass --prompt-column <name>")
    if not (pa.types.is_string(schema.field(column).type) or pa.types.is_large_string(schema.field(column).type)):
        raise HeadscopeError(f"--prompts {path} column '{column}' is {schema.field(column).type}, not text: pick a text column")
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    if any(v is None for v in values):
        raise HeadscopeError(f"--prompts {path} column '{column}' has empty cells: remove those rows")
    return check_texts(values, f"--prompts {path}")


def user_text_suite(tokenizer: Any, texts: Sequence[str], *, seq_len: int | None, n_ctx: int,
                    bos_token_id: int | None, prepend_bos: bool = True) -> TokenSuite:
    """The texts tokenised as the shipped natural-text suite is: BOS prepended when the tokenizer did not add it,
    truncated to `seq_len` (the analyzer's, capped at the model's context). Every text is used, in order."""
    limit = min(seq_len or n_ctx, n_ctx)
    sequences, samples = [], []
    for index, text in enumerate(texts):
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if prepend_bos and bos_token_id is not None and (not ids or ids[0] != bos_token_id):
            ids = [bos_token_id] + ids
        ids = ids[:limit]
        if len(ids) < 2:
            raise HeadscopeError(f"prompt {index} tokenises to fewer than 2 tokens: give it more text or remove it")
        sequences.append(ids)
        samples.append({"index": index})
    digest = prompts_digest(texts)
    details = {"source": f"user-prompts@{digest}", "n_texts": len(texts), "seq_len": limit, "prepend_bos": prepend_bos}
    return TokenSuite(name=f"user-prompts:{digest}", sequences=sequences, samples=samples, details=details)
