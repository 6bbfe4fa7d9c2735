"""Local fakes of every provider (Twilio, WeCom, the broadcast gateway, an SMTP server, and the ASGI server they run
on), for the tests and for `jiaoying demo --real-local` (config.demo.real_local).

This package (not the rest of tests/) is in the distribution's packages, so an editable install of the checkout
makes it importable from anywhere. Keep importing it free of side effects and of imports: each fake is its own
module, and smtp needs the development extras (aiosmtpd).
"""
