"""Record files, read and written the same way by the data builder, the evaluation and the reward-model training.

read_rows / located_rows   rows of a JSONL, JSON-list or CSV file; a bad line is a RecordError naming the file,
                           the line and the fix
write_json                 a JSON file written aside and renamed, so a kill never leaves half a file
AppendLog                  an append-only JSONL log that survives a kill: a rerun resumes from what it holds
"""

import csv
import json
import os
from typing import Callable, List, Optional, Tuple, Union


class RecordError(ValueError):
    """A record file that cannot be used; the message names the file, the line and the fix."""


def located_rows(path: str) -> List[Tuple[str, dict]]:
    """(where, row) for each row of a JSONL, JSON-list or CSV file, ``where`` naming the file and the 1-based line
    (row for a JSON list or CSV). Blank lines are skipped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RecordError(f"{path} does not exist: pass a .jsonl, .json or .csv file")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.lower().endswith(".csv"):
                return [(f"{path} row {i}", row) for i, row in enumerate(csv.DictReader(f), 1)]
            text = f.read()
    except UnicodeDecodeError as e:
        raise RecordError(f"{path} is not UTF-8 text ({e}): save it as UTF-8") from None
    if text.lstrip().startswith("["):  # one JSON list
        try:
            located = [(f"{path} row {i}", row) for i, row in enumerate(json.loads(text), 1)]
        except json.JSONDecodeError as e:
            raise RecordError(f"{path} line {e.lineno}: not valid JSON ({e.msg}: column {e.colno}); fix it") from None
    else:
        located = []
        for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028/2029 may sit inside a string
            if line.strip():
                try:
                    located.append((f"{path} line {number}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise RecordError(
                        f"{path} line {number}: not valid JSON ({e.msg}: column {e.colno}); a half-written line? "
                        "Fix or delete it"
                    ) from None
    for where, row in located:
        if not isinstance(row, dict):
            raise RecordError(f"{where}: expected an object, got {row!r:.60}; write one JSON object per line")
    return located


def read_rows(path: str) -> List[dict]:
    return [row for _, row in located_rows(path)]


def write_json(path: str, value):
    """Written to a temporary file and renamed: a kill never leaves half a file."""
    path = os.fspath(path)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)


class AppendLog:
    """Append-only JSONL of records keyed by ``key(record)``, each stamped with the hash of the config that made it.

    A record is one line, appended and fsynced once complete; a rerun skips the records already logged, so a run
    killed at any point and started again with the same flags logs what an uninterrupted run logs. ``config_hash`` is
    the hash every record must carry, or a function giving the hash a record must carry (None: not checked, e.g. the
    verdicts of a judge this run does not use); append() stamps it. Reading checks every complete line and writes
    nothing, so a refused run leaves the log as it was. A last line without its newline is what a kill mid-write
    leaves: it is ignored, and cut away by the first append. ``unstamped_ok``: accept records without a hash (logged
    by a build_dataset older than the per-record hash, whose manifest.json vouches for them).
    """

    def __init__(
        self,
        path: str,
        config_hash: Union[str, Callable[[dict], Optional[str]]],
        unstamped_ok: bool = False,
        key: Callable[[dict], str] = lambda record: record["id"],
    ):
        self.path, self.key, self.records, self.file = path, key, {}, None
        self.expected_hash = config_hash if callable(config_hash) else lambda record: config_hash
        data = b""
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
        self.complete = data.rfind(b"\n") + 1  # bytes up to the end of the last complete line
        for number, line in enumerate(data[: self.complete].splitlines(), 1):
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
                record_key = key(record)
            except (ValueError, TypeError, KeyError) as e:  # not JSON, not an object, or no key
                # JSONDecodeError's msg leaves out its "line 1 column ..." of the one line parsed.
                raise RecordError(
                    f"{where} is not a work-log record ({type(e).__name__}: {getattr(e, 'msg', e)}): delete that "
                    "line (its record is made again on resume), or use a new --output_dir"
                ) from None
            wanted, found = self.expected_hash(record), record.get("config_hash")
            if found is None and wanted is not None and not unstamped_ok:
                raise RecordError(
                    f"{where} has no config_hash (logged by an older version) and manifest.json, which recorded the "
                    "config of such logs, is missing: restore manifest.json to resume, or use a new --output_dir"
                )
            if wanted is not None and found not in (wanted, None):
                raise RecordError(
                    f"{where} was logged with config hash {found}, this run's is {wanted} (flags, inputs or template "
                    "files differ; the run's manifest.json holds its config): rerun with that run's flags to resume, "
                    "or use a new --output_dir"
                )
            self.records[record_key] = record

    def append(self, records: List[dict]):
        if self.file is None:  # first write of this run: cut a line left half written by a kill
            self.file = open(self.path, "a", encoding="utf-8")
            self.file.truncate(self.complete)
        for record in records:
            record = {**record, "config_hash": self.expected_hash(record)}
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.records[self.key(record)] = record
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None
