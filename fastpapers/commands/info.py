import json


def register(sub):
    p = sub.add_parser("info", help="show what this installation compiled and can run")
    p.set_defaults(func=run)


def run(args):
    from .. import info
    print(json.dumps(info(), indent=2))
