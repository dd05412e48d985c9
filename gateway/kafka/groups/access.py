"""Who may do what with a group over Kafka: HTTP's rules (gateway/http/auth.py) through
`Broker.allows`. Joining, syncing, heartbeats, leaving, committing and reading a group's
offsets or description need `consume` on the group (as its HTTP routes do); commits and
offset reads also the topic rights HTTP asks for; ListGroups shows the groups the principal
has any right on, as `GET /v1/groups` does."""

from __future__ import annotations

from gateway.kafka.dispatch import Broker, Session
from gateway.kafka.errors import ErrorCode
from storage.names import is_valid_group_name

# Kafka's AclOperation codes, for DescribeGroups' authorized_operations bit field
_READ, _DELETE, _DESCRIBE = 3, 6, 8


def principal_id(session: Session) -> str | None:
    """What a member id is bound to (`Principal.identity`); None with auth off."""
    return None if session.principal is None else session.principal.identity


def may_use(broker: Broker, session: Session, group: str) -> bool:
    return broker.allows(session, "consume", "group", group)


def refusal(broker: Broker, session: Session, group: str) -> ErrorCode | None:
    """Why a request about `group` is refused before anything is looked up (None: it is
    not): GROUP_AUTHORIZATION_FAILED without the right, INVALID_GROUP_ID for a name HTTP
    would refuse too."""
    if not may_use(broker, session, group):
        return ErrorCode.GROUP_AUTHORIZATION_FAILED
    if not is_valid_group_name(group):
        return ErrorCode.INVALID_GROUP_ID
    return None


def may_list(broker: Broker, session: Session, group: str) -> bool:
    if broker.authenticator is None:
        return True
    return session.principal is not None and session.principal.sees("group", group)


def authorized_operations(broker: Broker, session: Session, group: str) -> int:
    """READ and DESCRIBE with `consume`, DELETE with `admin` on the group."""
    operations = 0
    if may_use(broker, session, group):
        operations |= 1 << _READ | 1 << _DESCRIBE
    if broker.allows(session, "admin", "group", group):
        operations |= 1 << _DELETE
    return operations


def client_host(session: Session) -> str:
    """The peer's address as Kafka shows it ("/127.0.0.1")."""
    return "/" + session.peer.rsplit(":", 1)[0]
