"""Media to text: converters by MIME type, run in a limited subprocess, fed by an allow-listed fetcher.

Conversion is channel-side work (queue ``convert``): it never runs in the web
process and never loads the model.  See docs/media.md.
"""
