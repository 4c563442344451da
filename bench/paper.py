"""What N:M sparse training buys on SAT: ``satc bench paper`` as a script (see :mod:`satc.paper`)."""

from satc.paper import main

if __name__ == "__main__":
    main()
