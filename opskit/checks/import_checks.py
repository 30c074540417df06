# Run inside a built image (python -c, its text read by opskit/images.py): import every module
# named in argv, stop at the first that fails, naming it.
import importlib, sys, traceback
for check in sys.argv[1:]:
    module, _, attr = check.partition(":")
    try:
        found = importlib.import_module(module)
        if attr:
            getattr(found, attr)
    except BaseException as exc:
        print(f"import check failed: {check}: {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=3)
        sys.exit(1)
    print(f"ok {check}")
