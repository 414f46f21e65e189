"""An independent reference implementation of scoring-t20.md (t20-classic only).

Written apart from the Rust engine, in another language, straight from the
rules text; it produced ipl-points.json, the golden file the Rust tests compare
with. Regenerate with:

    python3 reference_scorer.py ../../../../../shared/data/cricsheet/ipl > ipl-points.json

`scripts/test` runs it on every test run and fails when its output and the
golden file differ.
"""
import collections
import glob
import json
import os
import sys
from fractions import Fraction as F

def score(path, upto=None):
    m=json.load(open(path))
    players=set(p for t in m['info']['players'].values() for p in t)
    names=set(players)
    S=collections.defaultdict(lambda: collections.Counter())
    overs=collections.defaultdict(list)
    n=0
    for ii,inn in enumerate(m['innings']):
        so=inn.get('super_over',False)
        for ov in inn['overs']:
            for d in ov['deliveries']:
                if upto is not None:
                    if so: continue
                    if n>=upto: continue
                    n+=1
                names.update([d['batter'],d['bowler'],d['non_striker']])
                for w in d.get('wickets',[]):
                    names.add(w['player_out'])
                    for f in w.get('fielders',[]):
                        if 'name' in f: names.add(f['name'])
                if so: continue
                ex=d.get('extras',{})
                b=S[d['batter']]; bw=S[d['bowler']]
                rb=d['runs']['batter']
                b['runs']+=rb
                if not ex.get('wides'): b['balls']+=1
                nb=d.get('non_boundary') or d['runs'].get('non_boundary')
                if rb==4 and not nb: b['fours']+=1
                if rb==6 and not nb: b['sixes']+=1
                conc=rb+ex.get('wides',0)+ex.get('noballs',0)
                legal= not ex.get('wides') and not ex.get('noballs')
                bw['conc']+=conc; bw['legal']+=legal
                overs[(ii,ov['over'])].append((d['bowler'],legal,conc))
                for w in d.get('wickets',[]):
                    k=w['kind']
                    if k!='retired hurt': S[w['player_out']]['out']=1
                    if k in ('bowled','caught','caught and bowled','lbw','stumped','hit wicket'): bw['wk']+=1
                    if k in ('lbw','bowled'): bw['bonus']+=1
                    fs=w.get('fielders',[])
                    if k=='caught':
                        for f in fs:
                            if not f.get('substitute'): S[f['name']]['catch']+=1
                    if k=='caught and bowled': bw['catch']+=1
                    if k=='stumped':
                        for f in fs:
                            if not f.get('substitute'): S[f['name']]['st']+=1
                    if k=='run out':
                        if len(fs)==1:
                            if not fs[0].get('substitute'): S[fs[0]['name']]['rod']+=1
                        elif len(fs)>=2:
                            for f in fs[-2:]:
                                if not f.get('substitute'): S[f['name']]['ros']+=1
    for key,ds in overs.items():
        bs=set(x[0] for x in ds)
        if len(bs)==1 and sum(x[1] for x in ds)==6 and sum(x[2] for x in ds)==0: S[ds[0][0]]['maiden']+=1
    out={}
    for p in names:
        s=S[p]; pts=0
        if p in players: pts+=4
        r=s['runs']; pts+=r+s['fours']+2*s['sixes']
        pts+= 16 if r>=100 else 8 if r>=50 else 4 if r>=30 else 0
        if s['out'] and r==0: pts-=2
        if s['balls']>=10:
            sr=F(r*100,s['balls'])
            pts+= 6 if sr>170 else 4 if sr>150 else 2 if sr>=130 else 0 if sr>70 else -2 if sr>=60 else -4 if sr>=50 else -6
        w=s['wk']; pts+=25*w+8*s['bonus']+(16 if w>=5 else 8 if w>=4 else 4 if w>=3 else 0)+12*s['maiden']
        if s['legal']>=12:
            er=F(s['conc']*6,s['legal'])
            pts+= 6 if er<5 else 4 if er<6 else 2 if er<=7 else 0 if er<10 else -2 if er<=11 else -4 if er<=12 else -6
        pts+=8*s['catch']+(4 if s['catch']>=3 else 0)+12*s['st']+12*s['rod']+6*s['ros']
        out[p]=pts
    return out
def golden(directory):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        match_id = os.path.basename(path)[:-5]
        out[match_id] = {
            "full": dict(sorted(score(path).items())),
            "upto_120": dict(sorted(score(path, 120).items())),
        }
    return out


if __name__ == "__main__":
    json.dump(golden(sys.argv[1]), sys.stdout, indent=0, sort_keys=True)
    print()
