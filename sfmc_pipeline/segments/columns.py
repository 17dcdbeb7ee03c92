"""Column names of the segment datasets: memberships (``profile_key, segment``) and statuses (plus
``status``, ``held``, ``as_of``). The profile is named ``profile_key`` whatever the profile dataset
calls its key column."""

PROFILE_KEY = "profile_key"
SEGMENT = "segment"
STATUS = "status"
HELD = "held"
AS_OF = "as_of"
MEMBERSHIP_COLUMNS = [PROFILE_KEY, SEGMENT]
STATUS_COLUMNS = [PROFILE_KEY, SEGMENT, STATUS, HELD, AS_OF]
STATUSES = ("realized", "existing", "exited")
