"""The duty-room console: server-rendered pages for duty officers, township officers, auditors and admins."""
