from eic_proxy.entry import main

raise SystemExit(main())
