from eic_proxy.cli import main

raise SystemExit(main())
