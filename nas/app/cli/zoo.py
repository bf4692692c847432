"""`posenas zoo list|build`: the supernets that ship, and the one command that makes an entry."""
from __future__ import annotations

from nas.app.cli.command import Command, print_json_last
from nas.app.cli.flags import AMOUNT, COUNT, INDEX


class List(Command):
    """the trained supernets that ship with PoseNAS (use them as --supernet zoo:NAME)"""

    name = "zoo list"

    def add_arguments(self, p):
        p.add_argument("--json", action="store_true")

    def take_action(self, args):
        from nas.subnet import zoo

        cards = zoo.cards()
        for card in cards:
            aps = {row["subnet"]: row["AP"] for row in card.get("evaluation", {}).get("inherited", [])}
            stages = zoo.training_stages(card)
            steps, hours = (sum(stage.get(key, 0) for stage in stages) for key in ("steps", "train_hours"))
            hardware = " then ".join(dict.fromkeys(stage.get("hardware", "?") for stage in stages)) or "?"
            print(f"zoo:{card['name']}  space {card['space_name']}, {card['data']['kind']} data, {steps} steps in "
                  f"{len(stages)} stage(s) ({hours:.2f} h on {hardware}), {card.get('size_bytes', 0) / 1e6:.1f} MB; "
                  f"inherited AP max {aps.get('max', '?')}, min {aps.get('min', '?')}; sha256 {card['sha256'][:12]}")
        if not cards:
            print("no supernet ships in this installation")
        if args.json:
            print_json_last({"zoo": cards})


class Build(Command):
    """train a supernet once (resumable), judge it and pack it as a zoo entry"""

    name = "zoo build"

    def add_arguments(self, p):
        p.add_argument("config", help="run config with name, space, data and supernet sections "
                       "(e.g. nas/app/configs/zoo-cpu-synth.yaml)")
        p.add_argument("--out", required=True, help="run folder; resumes from what is there")
        p.add_argument("--into", help="entry folder (default OUT/zoo/NAME; nas/zoo/NAME ships it)")
        p.add_argument("--fp32", action="store_true", help="store float32 weights (default fp16)")
        p.add_argument("--standalone", type=INDEX, default=8, metavar="N",
                       help="subnets also trained alone, for the card's Kendall's tau (0: skip)")
        p.add_argument("--standalone-epochs", type=AMOUNT, default=1,
                       help="epochs each of those trains alone (a fraction is fine: 0.25)")
        p.add_argument("--predictor-samples", type=INDEX, default=200,
                       help="subnets evaluated in all to fit the entry's accuracy predictor (0: none; more than an "
                            "earlier build of this run folder evaluates the difference)")
        p.add_argument("--predictor-near-front", type=INDEX, default=0, metavar="N",
                       help="then N subnets near the AP-MACs front, where searches look (default 0)")
        p.add_argument("--predictor-workers", type=COUNT, default=1,
                       help="processes of one thread that evaluate the predictor's subnets side by side")
        p.add_argument("--standalone-only", action="store_true",
                       help="only train the --standalone subnets alone (independent of the supernet: run it "
                            "beside the supernet's training, on another core or machine; run it twice to train "
                            "two at once) and stop")

    def take_action(self, args):
        from nas.app.zoo import build_entry, train_ranking_alone

        if args.standalone_only:
            aps = train_ranking_alone(args.config, args.out, args.standalone, args.standalone_epochs)
            print("trained alone, AP: " + ", ".join(f"{name} {ap:.3f}" for name, ap in aps.items()))
            return
        card = build_entry(args.config, args.out, args.into, not args.fp32, args.predictor_samples, args.standalone,
                           args.standalone_epochs, args.predictor_workers, args.predictor_near_front)
        print(f"zoo entry {card['name']}: sha256 {card['sha256']}")
        for title, key in (("inherited AP", "inherited"), ("the presets' backbones under other heads", "other_heads")):
            if key in card["evaluation"]:
                print(f"{title}: " + ", ".join(f"{row['subnet']} ({row['head']}) {row['AP']:.3f}"
                                               for row in card["evaluation"][key]))
        if "standalone" in card:
            print(f"Kendall's tau against {card['standalone']['subnets']} subnets trained alone: "
                  f"{card['standalone']['kendall_tau']:.3f}")
        if "accuracy_predictor" in card:
            print(f"accuracy predictor: {card['accuracy_predictor']}")


COMMANDS = [List, Build]
