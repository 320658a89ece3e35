"""The owner directory: who a deal's owner is to the notifier (address, phone, time zone,
manager). A YAML file (``VECTOROS_NOTIFY_DIRECTORY_FILE``), read once at start::

    owners:
      u-17:
        name: Ana Lima
        email: ana@acme.example
        phone: "+33612345678"
        tz: Europe/Paris
        manager: u-1
      u-1:
        name: Bo Chen
        email: bo@acme.example

Keys are the CRM's owner ids (``data.owner_id`` of an insight). A manager that is not in the
directory is an error at start, as is an address without an ``@``.
"""

from __future__ import annotations

import zoneinfo
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    tz: str | None = None
    manager: str | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value or any(c in value for c in " \r\n<>,")):
            raise ValueError("not an email address")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value


class Directory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    owners: dict[str, Person] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _managers_known(self) -> Directory:
        for owner_id, person in self.owners.items():
            if person.manager is not None and person.manager not in self.owners:
                raise ValueError(f"{owner_id}: manager {person.manager!r} is not in the directory")
        return self

    def person(self, owner_id: str | None) -> Person | None:
        return None if owner_id is None else self.owners.get(owner_id)

    def manager_of(self, owner_id: str | None) -> str | None:
        person = self.person(owner_id)
        return None if person is None else person.manager


def parse_directory(text: str) -> Directory:
    return Directory.model_validate(yaml.safe_load(text) or {})


def load_directory(path: Path) -> Directory:
    """The directory in ``path``; ValueError with the file's name and the first problem."""
    try:
        return parse_directory(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the owner directory {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"the owner directory {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"the owner directory {path}: {where}: {first['msg']}") from None
