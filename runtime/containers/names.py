"""Container names: what Docker accepts, and the adjective_surname generator for unnamed ones."""

from __future__ import annotations

import random
from collections.abc import Callable

from ..errors import InvalidArgument
from ..lazy_re import lazy_compile

NAME_RE = lazy_compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

# Docker's name generator draws from longer lists; these are enough to make clashes rare.
_ADJECTIVES = (
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome", "blissful",
    "bold", "boring", "brave", "busy", "charming", "clever", "compassionate", "competent",
    "confident", "cool", "cranky", "crazy", "dazzling", "determined", "distracted", "dreamy",
    "eager", "ecstatic", "elastic", "elated", "elegant", "eloquent", "epic", "exciting",
    "fervent", "festive", "flamboyant", "focused", "friendly", "frosty", "funny", "gallant",
    "gifted", "goofy", "gracious", "great", "happy", "hardcore", "heuristic", "hopeful",
    "hungry", "infallible", "inspiring", "intelligent", "interesting", "jolly", "jovial",
    "keen", "kind", "laughing", "loving", "lucid", "magical", "modest", "musing", "mystifying",
    "naughty", "nervous", "nice", "nifty", "nostalgic", "objective", "optimistic", "peaceful",
    "pedantic", "pensive", "practical", "priceless", "quirky", "quizzical", "recursing",
    "relaxed", "reverent", "romantic", "sad", "serene", "sharp", "silly", "sleepy", "stoic",
    "strange", "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting", "unruffled",
    "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful", "xenodochial",
    "youthful", "zealous", "zen",
)
_SURNAMES = (
    "agnesi", "albattani", "allen", "almeida", "archimedes", "ardinghelli", "aryabhata",
    "austin", "babbage", "banach", "bardeen", "bartik", "bassi", "bell", "bhabha", "blackwell",
    "bohr", "booth", "borg", "bose", "boyd", "brahmagupta", "brattain", "brown", "carson",
    "chandrasekhar", "clarke", "colden", "cori", "cray", "curie", "darwin", "davinci", "diffie",
    "dijkstra", "dirac", "driscoll", "dubinsky", "easley", "edison", "einstein", "elion",
    "engelbart", "euclid", "euler", "faraday", "fermat", "fermi", "feynman", "franklin",
    "galileo", "gates", "goldberg", "goldstine", "golick", "goodall", "hamilton", "hawking",
    "heisenberg", "hermann", "hodgkin", "hoover", "hopper", "hugle", "hypatia", "jackson",
    "jang", "jennings", "jepsen", "johnson", "joliot", "jones", "kalam", "kapitsa", "keller",
    "kepler", "khorana", "kilby", "kirch", "knuth", "kowalevski", "lalande", "lamarr",
    "lamport", "leakey", "leavitt", "lederberg", "lehmann", "lewin", "lichterman", "liskov",
    "lovelace", "lumiere", "mahavira", "margulis", "matsumoto", "maxwell", "mayer", "mccarthy",
    "mcclintock", "mclean", "meitner", "mendel", "mendeleev", "merkle", "mirzakhani", "moore",
    "morse", "murdock", "napier", "nash", "neumann", "newton", "nightingale", "nobel",
    "noether", "northcutt", "noyce", "panini", "pare", "pascal", "pasteur", "payne",
    "perlman", "pike", "poincare", "poitras", "ptolemy", "raman", "ramanujan", "ride",
    "ritchie", "roentgen", "rosalind", "saha", "sammet", "shannon", "shaw", "shockley",
    "sinoussi", "snyder", "spence", "stonebraker", "swanson", "swartz", "tesla", "thompson",
    "torvalds", "turing", "varahamihira", "visvesvaraya", "wescoff", "wiles", "williams",
    "wilson", "wing", "wozniak", "wright", "yalow", "yonath",
)


def validate_container_name(name: str) -> str:
    """Returns the name without its leading "/"; InvalidArgument when Docker would refuse it."""
    if not NAME_RE.match(name) or name in ("/", ""):
        raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


def generate_name(taken: Callable[[str], bool]) -> str:
    """adjective_surname like Docker, with a digit appended after repeated clashes."""
    rng = random.SystemRandom()
    for attempt in range(20):
        name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_SURNAMES)}"
        if attempt >= 10:
            name += str(rng.randint(0, 9))
        if not taken(name):
            return name
    raise InvalidArgument("could not generate a unique container name")
