"""`python -m bench`: measure lmgate against its upstream and print what it adds."""

from bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
