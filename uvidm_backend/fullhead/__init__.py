"""The full head for game engines: the ICT FaceKit head fitted to the photo's BFM fit.

`ict_files` reads the ICT FaceKit files and caches them; `download` fetches them; `correspondence`
maps the ICT surface onto the BFM surface once per model folder; `fit` fits identity and expression;
`texture` paints the ICT texture layout; `cache` keeps what is computed once per model folder on disk;
`model` makes the exportable head; `files` writes it.
"""
