"""``python -m thinkfast`` (also what ``torchrun -m thinkfast`` runs)."""

from thinkfast.cli import main

if __name__ == "__main__":
    main()
