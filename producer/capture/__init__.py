"""``vectoros capture``: emails and meetings from connected mailboxes and calendars, matched to
deals, published as ``email.logged`` / ``meeting.logged`` (docs/capture.md)."""
