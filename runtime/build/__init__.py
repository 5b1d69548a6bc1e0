"""Building images from a Dockerfile: the Dockerfile front end (parsing, words, .dockerignore, the
build context) and the builder that runs it."""
