"""The Phonet REST API: subscribers that follow the company, and the calls a socket missed.

* :mod:`.records` — pure: lenient parsing of employees and call rows, the discovery rule;
* :mod:`.gaps` — pure: gaps in a subscriber's stream, the backfill schedule;
* :mod:`.client` — adapter: HTTP(S) with a session cookie, counted per endpoint and result;
* :mod:`.service` — adapter: discovery, the subscribers file, gap messages and backfill.

The shapes of the REST answers are observed in public integrations, not documented by
Phonet; a wrong guess degrades discovery or backfill, loudly, never the event stream.
"""
