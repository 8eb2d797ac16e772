"""The compiled-shape fast path: each template's inlined HTML compiled once, then filled.

``compile`` renders a template with marked slots, runs premailer once and cuts the
result into literal bytes and slots (a *shape*); ``fill`` writes a shape out for one
email with that email's values, quoted-printable encoded as it goes. The renderer
checks every new shape against its reference render, so this path is never wrong, only
faster.
"""
