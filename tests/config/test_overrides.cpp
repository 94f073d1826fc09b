// The command-line override grammar (config/override.hpp): a table of inputs with their parsed
// form or their error, then sweeps, globs, canonical formatting and hostile input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "config/override.hpp"
#include "test_helpers.hpp"

using ::testing::HasSubstr;
using ::testing::StartsWith;
using tlab::ConfigError;
using tlab::cfg::format_value;
using tlab::cfg::glob_match;
using tlab::cfg::glob_options;
using tlab::cfg::Node;
using tlab::cfg::Override;
using tlab::cfg::parse_override;
using tlab::cfg::parse_value;
using tlab::cfg::Sweep;
using tlab::cfg::sweep_values;

namespace {

std::string join_values(const std::vector<Node>& values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + format_value(values[i]);
  return out;
}

std::string join_patterns(const std::vector<std::string>& patterns) {
  std::string out;
  for (std::size_t i = 0; i < patterns.size(); ++i) out += (i ? ", " : "") + patterns[i];
  return out;
}

// A sweep in override syntax with every part spelled out: choice(...), range(a, b, step),
// glob(include=[...], exclude=[...]), wrapped in zip(...) when zipped.
std::string describe(const Sweep& s) {
  std::string inner;
  switch (s.fn) {
    case Sweep::Fn::Choice:
      inner = "choice(" + join_values(s.values) + ")";
      break;
    case Sweep::Fn::Range:
      inner = "range(" + join_values({s.start, s.stop, s.step}) + ")";
      break;
    case Sweep::Fn::Glob:
      inner = "glob(include=[" + join_patterns(s.include) + "], exclude=[" +
              join_patterns(s.exclude) + "])";
      break;
    case Sweep::Fn::Interval:  // bounds with their types: interval(0.0, 1.0), int(...): ints
      inner = "interval(" + join_values({s.start, s.stop}) + ")";
      break;
  }
  if (s.shuffle) inner = "shuffle(" + inner + ")";
  if (!s.tags.empty()) {
    std::string tags;
    for (const auto& t : s.tags) tags += t + ", ";
    inner = "tag(" + tags + inner + ")";
  }
  return s.zip ? "zip(" + inner + ")" : inner;
}

// An override in canonical form: the op prefix, key, @package, and the value as format_value
// writes it followed by its type ("x=1 (int)"), or the sweep.
std::string describe(const Override& o) {
  static const char* prefixes[] = {"", "+", "++", "~"};
  std::string out = prefixes[static_cast<int>(o.op)] + o.key;
  if (o.has_package) out += "@" + o.package;
  if (!o.has_value) return out;
  if (o.sweep) return out + "=" + describe(*o.sweep);
  return out + "=" + format_value(o.value) + " (" + o.value.type_name() + ")";
}

std::string parsed(const std::string& text) {
  try {
    return describe(parse_override(text));
  } catch (const ConfigError& e) {
    return std::string("error: ") + e.what();
  }
}

std::string error_of(const std::string& text) {
  return tlab::test::error_of<ConfigError>([&] { parse_override(text); });
}

// An input and either its canonical form or, starting with "error: ", a part of its message.
struct Case {
  std::string input;
  std::string expected;
};

void PrintTo(const Case& c, std::ostream* os) { *os << "'" << c.input << "'"; }

const std::vector<Case> kCases = {
    // Numbers.
    {"train.lr=0.01", "train.lr=0.01 (float)"},
    {"train.lr=1e-3", "train.lr=0.001 (float)"},
    {"seed=42", "seed=42 (int)"},
    {"seed=-7", "seed=-7 (int)"},
    {"seed=+7", "seed=7 (int)"},
    {"seed=0", "seed=0 (int)"},
    {"n=1_000", "n=1000 (int)"},
    {"n=1_000.5", "n=1000.5 (float)"},
    {"x=1.5", "x=1.5 (float)"},
    {"x=-2.", "x=-2.0 (float)"},
    {"x=.5", "x=0.5 (float)"},
    {"x=-.5e1", "x=-5.0 (float)"},
    {"x=1E+3", "x=1000.0 (float)"},
    {"x=00.5", "x=0.5 (float)"},
    {"x=inf", "x=inf (float)"},
    {"x=-INF", "x=-inf (float)"},
    {"x=+inf", "x=inf (float)"},
    {"x=NaN", "x=nan (float)"},
    {"x=1e-400", "x=0.0 (float)"},
    {"x=9223372036854775807", "x=9223372036854775807 (int)"},
    {"x=-9223372036854775808", "x=-9223372036854775808 (int)"},
    {"x=99999999999999999999",
     "error: at character 3: integer 99999999999999999999 is out of "
     "range"},
    {"x=-9223372036854775809", "error: integer -9223372036854775809 is out of range"},
    {"x=1e999", "error: at character 3: float 1e999 is out of range"},
    {"x=-1_000e1_000", "error: float -1_000e1_000 is out of range"},
    // Number-like strings.
    {"x=007", "x=007 (string)"},
    {"x=1_", "x=1_ (string)"},
    {"x=1__0", "x=1__0 (string)"},
    {"x=_1", "x=_1 (string)"},
    {"x=0x10", "x=0x10 (string)"},
    {"x=1.2.3", "x=1.2.3 (string)"},
    {"x=1e", "x=1e (string)"},
    {"x=infinity", "x=infinity (string)"},
    {"x=-", "x=- (string)"},
    // Bools and null.
    {"flag=true", "flag=true (bool)"},
    {"flag=FALSE", "flag=false (bool)"},
    {"flag=True", "flag=true (bool)"},
    {"x=null", "x=null (null)"},
    {"x=NULL", "x=null (null)"},
    // Unquoted strings.
    {"x=", "x='' (string)"},
    {"x=   ", "x='' (string)"},
    {"x= 5 ", "x=5 (int)"},
    {"x=\t5", "x=5 (int)"},
    {"name=hello world", "name='hello world' (string)"},
    {"name=  padded  ", "name=padded (string)"},
    {"path=/data/x.csv", "path=/data/x.csv (string)"},
    {"url=http://host:8080/a?b", "url=http://host:8080/a?b (string)"},
    {R"(win=C:\dir\file)", R"(win=C:\dir\file (string))"},
    {"e=a+b-c*d%e^f&g!h<i>j#k@l$m|n~o", "e=a+b-c*d%e^f&g!h<i>j#k@l$m|n~o (string)"},
    {"name=café", "name=café (string)"},
    {"x=choice", "x=choice (string)"},
    // Interpolations.
    {"i=${train.lr}", "i='${train.lr}' (string)"},
    {"i=x_${a.b}_y", "i='x_${a.b}_y' (string)"},
    {"i=${oc.env:HOME,/tmp}", "i='${oc.env:HOME,/tmp}' (string)"},
    {"i=${a.${b}}", "i='${a.${b}}' (string)"},
    {"i=${a", "error: at character 3: the interpolation '${' here is not closed"},
    {"i=$x", "i=$x (string)"},
    // Quoted strings.
    {"q='hello, world'", "q='hello, world' (string)"},
    {"q=\"double\"", "q=double (string)"},
    {"q='1'", "q='1' (string)"},
    {"q='true'", "q='true' (string)"},
    {"q='null'", "q='null' (string)"},
    {R"(q='it\'s')", R"(q='it\'s' (string))"},
    {R"(q="say \"hi\"")", R"(q='say "hi"' (string))"},
    {R"(q='a\b')", R"(q=a\b (string))"},
    {R"(q='a\\b')", R"(q='a\\b' (string))"},  // Hydra: backslashes only escape a quote
    {R"(q='a \${b}')", R"(q='a \${b}' (string))"},
    {R"(q='ends\\')", R"(q='ends\\' (string))"},
    {R"(q='x\\\'y')", R"(q='x\\\'y' (string))"},
    // Hydra's escapes in unquoted values: \ ( ) [ ] { } : = , space and tab.
    {R"(k=a\,b)", R"(k='a,b' (string))"},
    {R"(k=\ ab)", R"(k=' ab' (string))"},
    {R"(k=ab\\)", R"(k='ab\\' (string))"},
    {R"(k=1\,000)", R"(k='1,000' (string))"},
    {R"(k=a\:b)", R"(k=a:b (string))"},
    {R"(k=\(x\)\=\[y\])", R"(k='(x)=[y]' (string))"},
    {R"(k=$\{foo.bar\})", R"(k='${foo.bar}' (string))"},
    {R"(k=[a\,b, c])", R"(k=['a,b', c] (list))"},
    {R"(k=c:\foo\a-b.txt)", R"(k=c:\foo\a-b.txt (string))"},
    {R"(q="it's")", R"(q='it\'s' (string))"},
    {"q=''", "q='' (string)"},
    {"q=' spaced '", "q=' spaced ' (string)"},
    {"q='(a)=[b]'", "q='(a)=[b]' (string)"},
    {"q='abc", "error: at character 3: the string quoted with \"'\" here is not closed"},
    {"q=\"abc", "error: at character 3: the string quoted with '\"' here is not closed"},
    {R"(q='abc\')", "error: at character 3: the string quoted"},
    {"q='a'b",
     "error: at character 6: unexpected 'b' right after the string quoted at character 3"},
    {"q='é'b", "error: at character 6: unexpected 'b'"},
    {"q='a' 'b'",
     "error: at character 7: unexpected \"'\" after the value that starts at "
     "character 3"},
    {"q=ab'c'", "error: at character 5: a quote can only start a value"},
    // Characters that need quotes.
    {"x=a=b", "error: at character 4: '=' is not allowed here"},
    {"x==1", "error: at character 3: '=' is not allowed here"},
    {"x=1.5(2)", "error: at character 6: '(' is not allowed in an unquoted value"},
    {"x=a;b", "error: at character 4: character ';' is not allowed in an unquoted value; quote"},
    {"x=a`b", "error: at character 4: character '`' is not allowed"},
    {"x=a[1]", "error: at character 4: '[' can only start a list"},
    {"x=a{b", "error: at character 4: '{' can only start a table"},
    {"x=]", "error: at character 3: expected a value after '=', found ']'"},
    {"x=a)", "error: at character 4: unexpected ')' with no '(' before it"},
    // Lists.
    {"l=[1, 2, 3]", "l=[1, 2, 3] (list)"},
    {"l=[]", "l=[] (list)"},
    {"l=[ ]", "l=[] (list)"},
    {"l=[a, 'b c', 1.5, null, true]", "l=[a, 'b c', 1.5, null, true] (list)"},
    {"l=[[1,2],[3],[]]", "l=[[1, 2], [3], []] (list)"},
    {"l=[{a: 1}, {}]", "l=[{a: 1}, {}] (list)"},
    {"l=[1 2]", "l=['1 2'] (list)"},
    {"x=[1,2",
     "error: at character 7: the list that starts at character 3 is not closed; "
     "expected ',' or ']'"},
    {"train.lr=[1,2",
     "error: override 'train.lr=[1,2' at character 14: the list that starts at "
     "character 10 is not closed; expected ',' or ']'"},
    {"x=[1 'a']", "error: at character 6: a quote can only start a value"},
    {"x=['a' 'b']",
     "error: at character 8: expected ',' or ']' to continue the list that starts "
     "at character 3, found \"'\""},
    {"x=[1,,2]",
     "error: at character 6: expected a value in the list that starts at character 3, "
     "found ','; remove the extra ','"},
    {"x=[1,]",
     "error: at character 6: expected a value in the list that starts at character 3, "
     "found ']'; remove the trailing ','"},
    {"x=[,]", "error: at character 4: expected a value in the list"},
    {"x=[1]]", "error: at character 6: unexpected ']' with no '[' before it"},
    {"x=[1] 2", "error: at character 7: unexpected '2' after the value that starts at character 3"},
    {"x=[1}", "error: at character 5: expected ',' or ']' to continue the list"},
    // Tables.
    {"t={a: 1, b = 2}", "t={a: 1, b: 2} (table)"},
    {"t={}", "t={} (table)"},
    {"t={ }", "t={} (table)"},
    {"t={'x y': 1, \"k\": [1]}", "t={'x y': 1, k: [1]} (table)"},
    {"t={a: {b: {c: 1}}}", "t={a: {b: {c: 1}}} (table)"},
    {"t={a-b_1: x:y}", "t={a-b_1: x:y} (table)"},
    {"t={1: one}", "t={1: one} (table)"},
    {"t={a 1}",
     "error: at character 7: expected ':' or '=' after the key 'a 1' in the table that "
     "starts at character 3"},
    // Hydra's dictionary keys: blanks inside, special characters, escapes.
    {"t={white spaces: 1, ' q': 2}", "t={'white spaces': 1, ' q': 2} (table)"},
    {R"(t={/-\+.$%*@?|: 1})", R"(t={'/-\+.$%*@?|': 1} (table))"},
    {R"(t={a\:b\,c: 1})", R"(t={'a:b,c': 1} (table))"},
    {"t={ab 123.5 True: 2}", "t={'ab 123.5 True': 2} (table)"},
    {"t={${x}: 1}", "error: at character 4: an interpolation cannot be a table key"},
    {"t={a(b: 1}",
     "error: at character 5: '(' is not allowed in a bare table key; quote the "
     "key (e.g. {'a(': ...})"},
    {"t={a: 1, a: 2}",
     "error: at character 10: duplicate key 'a' in the table that starts at "
     "character 3 (first at character 4)"},
    {"t={a: 1", "error: at character 8: the table that starts at character 3 is not closed"},
    {"t={a.b: 1}", "t={'a.b': 1} (table)"},  // one key holding a dot, as in Hydra
    {"t={: 1}", "error: at character 4: expected a key in the table"},
    {"t={a: }", "error: at character 7: expected a value for the key 'a', found '}'"},
    {"t={'': 1}", "error: at character 4: a table key cannot be empty"},
    {"t={a: 1,}",
     "error: at character 9: expected a key in the table that starts at character 3, "
     "found '}'"},
    {"t={a: b=c}", "error: at character 8: '=' is not allowed here"},
    // Keys, ops and packages.
    {"+a.b=[1,{x: 2}]", "+a.b=[1, {x: 2}] (list)"},
    {"++a=1", "++a=1 (int)"},
    {"~a", "~a"},
    {"~a=1", "~a=1 (int)"},
    {"~a=", "~a='' (string)"},
    {"dataset@target=noisy", "dataset@target=noisy (string)"},
    {"group@_global_=x", "group@_global_=x (string)"},
    {"+db@pkg.sub=mysql", "+db@pkg.sub=mysql (string)"},
    {"~dataset@target", "~dataset@target"},
    {"dataset/digits=small", "dataset/digits=small (string)"},
    {"adapters.0.lr=0.1", "adapters.0.lr=0.1 (float)"},
    {"key-with_dash=1", "key-with_dash=1 (int)"},
    {"abc", "error: override 'abc' at character 4: not of the form key=value"},
    {"", "error: override '' at character 1: the key is empty"},
    {"+abc", "error: at character 5: not of the form +key=value"},
    {"++abc", "error: not of the form ++key=value"},
    {"=1", "error: at character 1: the key is empty"},
    {"~", "error: at character 2: the key is empty"},
    {"+=1", "error: at character 2: the key is empty; write +key=value"},
    {"@pkg=1", "error: at character 1: the key is empty"},
    {"a..b=1", "error: at character 3: empty name between '.' and '.'"},
    {".a=1", "error: at character 1: a key cannot start with '.'"},
    {"a.=1", "error: at character 2: a key cannot end with '.'"},
    {"a//b=1", "error: at character 3: empty name between '/' and '/'"},
    {"a b=1", "error: at character 2: a space is not allowed in a key"},
    {"a:1", "error: at character 2: ':' is not allowed in a key"},
    {"train.lr:0.1", "did you mean 'train.lr=0.1'?"},
    {"a@b@c=1", "error: at character 4: a second '@' in the key"},
    {"a@=1", "a@=1 (int)"},  // Hydra's empty package: the global one
    {"$foo.bar$.x$z=1", "$foo.bar$.x$z=1 (int)"},
    {"$foo/bar=x", "error: at character 5: '/' is not allowed in a key with '$'"},
    {"db@$a.b$=x", "db@$a.b$=x (string)"},
    {"a@b/c=1", "error: at character 4: '/' is not allowed in a package"},
    {"a@.b=1", "error: at character 3: a package cannot start with '.'"},
    {"+++a=1", "error: at character 3: '+' is not allowed in a key"},
    {"~~a", "error: at character 2: '~' is not allowed in a key"},
    {"a(1)=2", "error: at character 2: '(' is not allowed in a key"},
    {"é=1", "error: at character 1: 'é' is not allowed in a key"},
    // Sweeps written a,b,c.
    {"seed=1,2,3", "seed=choice(1, 2, 3)"},
    {"lr=0.1, 0.01", "lr=choice(0.1, 0.01)"},
    {"x=a,'b,c',null", "x=choice(a, 'b,c', null)"},
    {"x=[1,2],[3]", "x=choice([1, 2], [3])"},
    {"x=a b,c", "x=choice('a b', c)"},
    {"x=1,",
     "error: at character 5: expected a value after ',' (a sweep is written a,b,c), found "
     "the end"},
    {"x=,1",
     "error: at character 3: expected a value after '=', found ','; to use ',' in a "
     "string, quote the value"},
    {"x=1,,2", "error: at character 5: expected a value after ','"},
    {"x=choice(a),b",
     "error: at character 3: a sweep function cannot be one value of an 'a,b,c' "
     "sweep"},
    {"x=1,choice(2)", "error: at character 5: a sweep function cannot be one value"},
    {"~a=1,2", "error: it cannot take a sweep"},
    // choice() and range().
    {"x=choice(a,b)", "x=choice(a, b)"},
    {"x=choice(1)", "x=choice(1)"},
    {"x=choice (a, [b])", "x=choice(a, [b])"},
    {"seed=range(1,5)", "seed=range(1, 5, 1)"},
    {"lr=range(0, 1, 0.1)", "lr=range(0, 1, 0.1)"},
    {"x=range(start=1, stop=10, step=2)", "x=range(1, 10, 2)"},
    {"x=range(1, step=2, stop=10)", "x=range(1, 10, 2)"},
    {"x=range(5, 1, -1)", "x=range(5, 1, -1)"},
    {"x=choice()", "error: at character 3: choice() needs at least one value"},
    {"x=choice(a=1)", "error: at character 10: choice() takes no named arguments"},
    {"x=choice(range(1,2))", "error: at character 10: choice() takes plain values"},
    {"x=choice(a",
     "error: at character 11: the call choice(...) that starts at character 3 is "
     "not closed"},
    {"x=choice(a b c", "error: the call choice(...) that starts at character 3 is not closed"},
    {"x=choice(a;b)", "error: at character 11: character ';' is not allowed"},
    {"x=choice(a,)",
     "error: at character 12: expected a value in the arguments of choice() that "
     "start at character 9, found ')'; remove the trailing ','"},
    {"x=range(3)", "x=range(0, 3, 1)"},  // Hydra: range(stop) counts from 0
    {"x=range(5.5, step=0.5)", "x=range(0, 5.5, 0.5)"},
    {"x=range(step=2)", "error: at character 3: range() needs a stop"},
    {"x=range(a, 5)",
     "error: at character 9: range() takes numbers, but its start is string "
     "\"a\""},
    {"x=range(true, 5)", "error: but its start is bool true"},
    {"x=range(1,5,1,2)", "error: at character 15: range() takes at most 3 values"},
    {"x=range(start=1, 5)", "error: at character 18: a positional argument after a named one"},
    {"x=range(1, stpo=5)",
     "error: range() has no argument 'stpo'; it takes start, stop and "
     "step; did you mean 'stop' or 'step'?"},
    {"x=range(1, 5, start=2)", "error: at character 15: range() got start twice"},
    {"x=range(1, choice(2))", "error: range() takes numbers, not a sweep"},
    // glob().
    {"strategy=glob(*,exclude=d*)", "strategy=glob(include=[*], exclude=[d*])"},
    {"x=glob([a*, b*])", "x=glob(include=[a*, b*], exclude=[])"},
    {"x=glob(*, exclude=[x, y])", "x=glob(include=[*], exclude=[x, y])"},
    {"x=glob(include=c*)", "x=glob(include=[c*], exclude=[])"},
    {"x=glob('[ab]*')", "x=glob(include=[[ab]*], exclude=[])"},
    {"x=glob()", "error: at character 3: glob() needs a pattern"},
    {"x=glob(a, b)", "error: at character 11: glob() takes one pattern or a list of patterns"},
    {"x=glob(*, exlude=d*)",
     "error: glob() has no argument 'exlude'; it takes include and "
     "exclude; did you mean 'exclude'?"},
    {"x=glob(1.5)", "error: at character 8: glob() patterns are option names"},
    {"x=glob(*, exclude=a, exclude=b)", "error: glob() got exclude twice"},
    // zip().
    {"x=zip(1,2)", "x=zip(choice(1, 2))"},
    {"x=zip(a)", "x=zip(choice(a))"},
    {"x=zip(range(1,4))", "x=zip(range(1, 4, 1))"},
    {"x=zip(choice(a,b))", "x=zip(choice(a, b))"},
    {"x=zip(glob(*))", "x=zip(glob(include=[*], exclude=[]))"},
    {"x=zip()", "error: at character 3: zip() needs values or one sweep"},
    {"x=zip(zip(1,2))", "error: at character 7: zip() inside zip()"},
    {"x=zip(choice(a), b)",
     "error: at character 7: zip() takes either plain values or a single "
     "sweep"},
    {"x=zip(a=1)", "error: zip() takes no named arguments"},
    // Casts.
    {"x=int(1.7)", "x=1 (int)"},
    {"x=int(-1.7)", "x=-1 (int)"},
    {"x=int('42')", "x=42 (int)"},
    {"x=int(true)", "x=1 (int)"},
    {"x=int(value=2.5)", "x=2 (int)"},
    {"x=float(3)", "x=3.0 (float)"},
    {"x=float('1e-3')", "x=0.001 (float)"},
    {"x=str(3)", "x='3' (string)"},
    {"x=str(1.5)", "x='1.5' (string)"},
    {"x=str(true)", "x='true' (string)"},
    {"x=str(abc)", "x=abc (string)"},
    {"x=bool(0)", "x=false (bool)"},
    {"x=bool('TRUE')", "x=true (bool)"},
    {"x=bool(2.5)", "x=true (bool)"},
    {"x=int(null)", "x=null (null)"},
    {"x=int([1.5, '2'])", "x=[1, 2] (list)"},
    {"x=float({a: 1})", "x={a: 1.0} (table)"},
    {"x=[int(1.5), 2]", "x=[1, 2] (list)"},
    {"x=int(range(1,4))", "x=choice(1, 2, 3)"},
    {"x=float(range(1,3))", "x=choice(1.0, 2.0)"},
    {"x=str(choice(1,2))", "x=choice('1', '2')"},
    {"x=str(1,2)", "x=choice('1', '2')"},  // Hydra: several values are an a,b sweep
    {"x=float(3,2,1)", "x=choice(3.0, 2.0, 1.0)"},
    {"x=str(range(1,3))",
     "error: at character 7: str() cannot cast range(): a range can only "
     "be cast to int or float"},
    {"x=bool(range(1,3))", "error: bool() cannot cast range()"},
    {"x=int(choice(1,2), 3)", "error: int() casts one sweep or several values, not both"},
    {"x=zip(int(range(1,3)))", "x=zip(choice(1, 2))"},
    {"x=int(zip(1.5,2.5))", "x=zip(choice(1, 2))"},
    {"x=int()", "error: at character 3: int() takes a value"},
    {"x=int(value=1, x=2)", "error: int() has no argument 'value'; it takes values"},
    {"x=int(v=1)", "error: int() has no argument 'v'"},
    {"x=int('abc')",
     "error: at character 7: int() cannot convert string \"abc\": expected an "
     "integer"},
    {"x=int(inf)", "error: int() cannot convert float inf: it is not a finite number"},
    {"x=int(1e30)", "error: outside the 64-bit integer range"},
    {"x=float('abc')", "error: float() cannot convert string \"abc\""},
    {"x=bool('yes')", "error: bool() cannot convert string \"yes\": expected true or false"},
    {"x=int(glob(*))", "error: at character 7: int() cannot cast glob()"},
    {"x=int(range(5,1))", "error: at character 7: range(5, 1) is empty"},
    // Functions that do not exist, and sweeps where none may be.
    {"x=sortt(a,b)",
     "error: at character 3: unknown function 'sortt'; available: choice, range, interval, "
     "glob, zip, sort, shuffle, tag, int, float, str, bool (did you mean 'sort'?)"},
    {"x=tag(log, choice(1,10))", "x=tag(log, choice(1, 10))"},  // labels: a grid ignores them
    {"x=tag(choice(1))", "x=choice(1)"},
    {"x=tag(a, 1)", "error: at character 3: tag() takes labels and then a sweep"},
    {"x=tag(1, choice(1))", "error: at character 7: tag()'s labels are names"},
    {"x=chioce(a,b)",
     "error: unknown function 'chioce'; available: choice, range, interval, glob, zip, sort, "
     "shuffle, tag, int, float, str, bool (did you mean 'choice'?); to use '(' in a string"},
    // sort() and shuffle(), as Hydra's.
    {"x=sort(1)", "x=1 (int)"},
    {"x=sort([3,1,2])", "x=[1, 2, 3] (list)"},
    {"x=sort(list=[b,c,a], reverse=true)", "x=[c, b, a] (list)"},
    {"x=sort(3,1,2)", "x=choice(1, 2, 3)"},
    {"x=sort(1, 2.5, true)", "x=choice(1, true, 2.5)"},  // Python: true == 1, stable
    {"x=sort(sweep=choice(b,a), reverse=true)", "x=choice(b, a)"},
    {"x=sort(range(9,0,-3))", "x=choice(3, 6, 9)"},
    {"x=sort(range(0,5,2), reverse=true)", "x=choice(4, 2, 0)"},
    {"x=zip(sort(2,1))", "x=zip(choice(1, 2))"},
    {"x=sort(3,2,str(1))", "error: at character 3: sort() cannot order"},
    {"x=sort()", "error: at character 3: sort() needs values"},
    {"x=sort(glob(*))", "error: sort() cannot reorder glob()"},
    {"x=sort(1, reverse=yes)", "error: sort()'s reverse= takes true or false"},
    {"x=shuffle(1,2,3)", "x=shuffle(choice(1, 2, 3))"},
    {"x=shuffle(range(3))", "x=shuffle(range(0, 3, 1))"},
    {"x=shuffle(a)", "x=[a] (list)"},
    {"x=shuffle(1, reverse=true)", "error: shuffle() has no argument 'reverse'"},
    {"x=shuffle([1], [2])", "x=shuffle(choice([1], [2]))"},
    {"x=shuffle(choice(1), 2)", "error: shuffle() takes one sweep, or several plain values"},
    {"x=Choice(a)", "did you mean 'choice'?"},
    {"x=a(b", "error: at character 3: unknown function 'a'"},
    // Distributions for sampled sweeps, with Hydra's Optuna-sweeper syntax.
    {"x=interval(0,1)", "x=interval(0.0, 1.0)"},  // Hydra: float bounds
    {"x=interval(start=-2.5, end=1e3)", "x=interval(-2.5, 1000.0)"},
    {"x=int(interval(1, 8.9))", "x=interval(1, 8)"},  // int() truncates the bounds
    {"x=float(interval(1, 8))", "x=interval(1.0, 8.0)"},
    {"x=tag(log, interval(1e-4, 0.1))", "x=tag(log, interval(0.0001, 0.1))"},
    {"x=int(tag(log, interval(1, 1024)))", "x=tag(log, interval(1, 1024))"},
    {"x=tag(log, int(interval(2, 64)))", "x=tag(log, interval(2, 64))"},
    {"x=interval(1, 1)",
     "error: at character 3: interval(1.0, 1.0): the low bound 1.0 must be below the high bound "
     "1.0"},
    {"x=interval(0.5, 0.1)", "error: the low bound 0.5 must be below the high bound 0.1"},
    {"x=int(interval(0.2, 0.9))", "error: int(interval(0, 0)): the low bound 0 must be below"},
    {"x=tag(log, interval(0, 1))",
     "error: at character 3: tag(log, interval(0.0, 1.0)): a log interval is drawn uniformly in "
     "log space, so its low bound must be above 0, got 0.0"},
    {"x=tag(log, interval(-1, 1))", "error: its low bound must be above 0, got -1.0"},
    {"x=interval(1)", "error: interval() needs two bounds: interval(low, high)"},
    {"x=interval(1, 2, 3)", "error: interval() takes two bounds: interval(low, high)"},
    {"x=interval(a, 2)", "error: interval()'s start must be a finite number"},
    {"x=interval(0, inf)", "error: interval()'s end must be a finite number"},
    {"x=interval(low=1, end=2)", "error: interval() has no argument 'low'; it takes start and end"},
    {"x=str(interval(1, 2))", "error: str() cannot cast interval()"},
    {"x=sort(interval(1, 2))", "error: sort() cannot reorder interval()"},
    {"x=zip(interval(1, 2))", "error: zip() pairs the i-th values of lists"},
    {"x=choice(interval(1, 2))", "error: choice() takes plain values"},
    {"x=[choice(1,2)]",
     "error: at character 4: sweep functions (choice, range, glob, zip) cannot "
     "be inside a list"},
    {"x={a: range(1,3)}",
     "error: at character 7: sweep functions (choice, range, glob, zip) "
     "cannot be inside a table"},
    // Characters that are not text, and positions counted in characters.
    {"x=\x01", "error: at character 3: control character U+0001 is not allowed"},
    {"x=a\nb", "error: at character 4: the override contains a line break"},
    {"x=a\rb", "error: at character 4: the override contains a line break"},
    {std::string("x=a\0b", 5), "error: at character 4: control character U+0000"},
    {"x=\x7f", "error: control character U+007F"},
    {"x=\xff", "error: override 'x=?' at character 3: byte 0xFF is not valid UTF-8"},
    {"x=é\xff", "error: at character 4: byte 0xFF is not valid UTF-8"},
    {"x=\xc0\xaf", "error: at character 3: byte 0xC0 is not valid UTF-8"},
    {"x=\xed\xa0\x80", "error: at character 3: byte 0xED is not valid UTF-8"},
    {"x=\xe2\x82", "error: at character 3: byte 0xE2 is not valid UTF-8"},
    {"x='\ttab'", "x='\ttab' (string)"},
    {"x=[é, ü", "error: at character 8: the list that starts at character 3 is not closed"},
    {"x=" + std::string(65, '[') + std::string(65, ']'),
     "error: at character 67: the value is nested too deeply (more than 64 levels"},
    {"x=" + std::string(64, '[') + std::string(64, ']'),
     "x=" + std::string(64, '[') + std::string(64, ']') + " (list)"},
};

class OverrideTable : public ::testing::TestWithParam<Case> {};

TEST_P(OverrideTable, ParsesOrExplains) {
  const Case& c = GetParam();
  std::string got = parsed(c.input);
  const std::string error_prefix = "error: ";
  if (c.expected.rfind(error_prefix, 0) == 0) {
    EXPECT_THAT(got, StartsWith(error_prefix + "override '"));
    EXPECT_THAT(got, HasSubstr(c.expected.substr(error_prefix.size())));
    // Every message ends with the text and a caret under the place.
    EXPECT_THAT(got, HasSubstr("\n    "));
    EXPECT_EQ(got.back(), '^') << got;
  } else if (c.expected.find("did you mean") != std::string::npos) {
    EXPECT_THAT(got, HasSubstr(c.expected));
  } else {
    EXPECT_EQ(got, c.expected);
  }
}

INSTANTIATE_TEST_SUITE_P(Override, OverrideTable, ::testing::ValuesIn(kCases));

TEST(OverrideTableSize, HasEnoughCases) { EXPECT_GE(kCases.size(), 90u); }

// --- Messages and origins ---------------------------------------------------------------------

TEST(OverrideErrors, MessageShowsTheTextWithACaret) {
  EXPECT_EQ(error_of("x=[1,2"),
            "override 'x=[1,2' at character 7: the list that starts at character 3 is not closed; "
            "expected ',' or ']'\n    x=[1,2\n          ^");
  // The caret counts characters, not bytes.
  EXPECT_THAT(error_of("x='é'b"), testing::EndsWith("\n    x='é'b\n         ^"));
  // Tabs are shown as spaces so that the caret lines up.
  EXPECT_THAT(error_of("x=\t'a'b"), testing::EndsWith("\n    x= 'a'b\n          ^"));
}

TEST(OverrideErrors, LongTextIsShownAroundThePosition) {
  std::string text = "x=" + std::string(500, 'a') + ";" + std::string(500, 'b');
  std::string e = error_of(text);
  EXPECT_THAT(e, HasSubstr("at character 503: character ';'"));
  std::size_t line = e.find("\n    ...");
  ASSERT_NE(line, std::string::npos) << e;
  std::string shown = e.substr(line + 5, e.find('\n', line + 1) - line - 5);
  std::string caret = e.substr(e.rfind('\n') + 5);
  EXPECT_LE(shown.size(), 110u);
  EXPECT_EQ(shown[caret.size() - 1], ';');
}

TEST(OverrideOrigins, EveryValueKnowsItsCharacter) {
  // Positions count characters: 'é' is two bytes but one character.
  Override o = parse_override("+a.k= ['é', {a: 'x'}]");
  EXPECT_EQ(o.op, Override::Op::Add);
  EXPECT_EQ(o.text, "+a.k= ['é', {a: 'x'}]");
  EXPECT_EQ(o.origin.position, 1u);
  EXPECT_EQ(o.key_origin.position, 2u);
  EXPECT_EQ(o.value_origin.position, 7u);
  EXPECT_EQ(o.value.origin.override, o.text);
  EXPECT_EQ(o.value.origin.position, 7u);
  EXPECT_EQ(o.value.items()[0].origin.position, 8u);
  EXPECT_EQ(o.value.items()[1].origin.position, 13u);
  EXPECT_EQ(o.value.items()[1].get("a")->origin.position, 17u);
  EXPECT_EQ(o.value.items()[1].get("a")->origin.where(),
            "override '+a.k= ['é', {a: 'x'}]' at character 17");
}

TEST(OverrideOrigins, SweepsKnowWhereTheyStart) {
  Override o = parse_override("seed=1, 2");
  ASSERT_TRUE(o.sweep);
  EXPECT_EQ(o.sweep->origin.position, 6u);
  EXPECT_EQ(o.sweep->values[1].origin.position, 9u);
  Override r = parse_override("lr=range(0, 1, step=0.5)");
  ASSERT_TRUE(r.sweep);
  EXPECT_EQ(r.sweep->origin.position, 4u);
  EXPECT_EQ(r.sweep->start.origin.position, 10u);
  EXPECT_EQ(r.sweep->step.origin.position, 21u);
  Override e = parse_override("k=");
  EXPECT_EQ(e.value_origin.position, 3u);
  EXPECT_TRUE(e.value.is_string());
}

TEST(OverrideOrigins, DeleteWithoutValue) {
  Override o = parse_override("~train.lr");
  EXPECT_EQ(o.op, Override::Op::Delete);
  EXPECT_FALSE(o.has_value);
  EXPECT_FALSE(o.sweep);
  EXPECT_EQ(o.key, "train.lr");
}

TEST(OverrideParseValue, UsesWhereInMessages) {
  auto v = parse_value("1, 2", "sweep.seed");
  ASSERT_TRUE(v.sweep);
  EXPECT_EQ(describe(*v.sweep), "choice(1, 2)");
  EXPECT_EQ(v.sweep->values[0].origin.override, "sweep.seed");
  EXPECT_EQ(parse_value("", "x").value, Node::string(""));
  EXPECT_EQ(parse_value("{a: [1]}", "x").value.get("a")->items()[0], Node::integer(1));
  std::string e = tlab::test::error_of<ConfigError>([] { parse_value("[1,", "sweep.lr"); });
  EXPECT_THAT(e, StartsWith("override 'sweep.lr' at character 4: expected a value in the list "
                            "that starts at character 1"));
  EXPECT_THAT(e, testing::EndsWith("\n    [1,\n       ^"));
}

// --- Sweep values -----------------------------------------------------------------------------

std::string values_of(const std::string& value) {
  try {
    auto v = parse_value(value, value);
    if (!v.sweep) return "not a sweep";
    return join_values(sweep_values(*v.sweep));
  } catch (const ConfigError& e) {
    return std::string("error: ") + e.what();
  }
}

TEST(OverrideSweep, IntRanges) {
  EXPECT_EQ(values_of("range(1, 5)"), "1, 2, 3, 4");
  EXPECT_EQ(values_of("range(0, 10, 3)"), "0, 3, 6, 9");
  EXPECT_EQ(values_of("range(5, 1, -1)"), "5, 4, 3, 2");
  EXPECT_EQ(values_of("range(-5, 5, 3)"), "-5, -2, 1, 4");
  EXPECT_EQ(values_of("range(-3, -1)"), "-3, -2");
  EXPECT_EQ(values_of("range(stop=3, start=1)"), "1, 2");
  auto v = parse_value("range(9223372036854775805, 9223372036854775807)", "x");
  auto values = sweep_values(*v.sweep);
  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(values[1].as_int(), 9223372036854775806);
}

TEST(OverrideSweep, FloatRangesAreRoundedTo15Digits) {
  EXPECT_EQ(values_of("range(0, 1, 0.1)"), "0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9");
  // 0.1 * 3 is 0.30000000000000004 before rounding: the stop stays excluded.
  EXPECT_EQ(values_of("range(0, 0.3, 0.1)"), "0.0, 0.1, 0.2");
  EXPECT_EQ(values_of("range(1, 2.5)"), "1.0, 2.0");
  EXPECT_EQ(values_of("range(1.0, 0.5, -0.1)"), "1.0, 0.9, 0.8, 0.7, 0.6");
  EXPECT_EQ(values_of("range(-0.3, 0, 0.1)"), "-0.3, -0.2, -0.1");
  // Rounding is relative to the range's scale, so zero is crossed at 0.0, not 5.6e-17.
  EXPECT_EQ(values_of("range(-0.3, 0.2, 0.1)"), "-0.3, -0.2, -0.1, 0.0, 0.1");
  EXPECT_EQ(values_of("range(1e-20, 5e-20, 1e-20)"), "1e-20, 2e-20, 3e-20, 4e-20");
  EXPECT_EQ(values_of("range(1e20, 4e20, 1e20)"), "1e+20, 2e+20, 3e+20");
  auto v = parse_value("range(0, 1, 0.1)", "x");
  auto values = sweep_values(*v.sweep);
  EXPECT_EQ(values[3].as_number(), 0.3);
  EXPECT_EQ(values[3].origin.position, 1u);
  EXPECT_EQ(values[3].origin.override, "x");
}

TEST(OverrideSweep, RangeErrors) {
  EXPECT_THAT(values_of("range(5, 1)"),
              StartsWith("error: override 'range(5, 1)' at character 1: range(5, 1) is empty: the "
                         "stop is excluded"));
  EXPECT_THAT(values_of("range(1, 1)"), HasSubstr("range(1, 1) is empty"));
  EXPECT_THAT(values_of("range(1.5, 0.5, 0.5)"), HasSubstr("is empty"));
  EXPECT_THAT(values_of("range(1, 5, 0)"), HasSubstr("range(1, 5, 0) has a zero step"));
  EXPECT_THAT(values_of("range(1, 5, 0.0)"), HasSubstr("has a zero step"));
  EXPECT_THAT(values_of("range(0, 100001)"),
              HasSubstr("range(0, 100001) has 100001 values, more than the 100000 allowed"));
  EXPECT_EQ(sweep_values(*parse_value("range(0, 100000)", "x").sweep).size(), 100000u);
  EXPECT_THAT(values_of("range(0, 1, 1e-6)"), HasSubstr("more than the 100000 allowed"));
  EXPECT_THAT(values_of("range(-9223372036854775808, 9223372036854775807)"),
              HasSubstr("more than the 100000 allowed"));
  EXPECT_THAT(values_of("range(-1e308, 1e308, 1e-308)"), HasSubstr("more than the 100000"));
  EXPECT_THAT(values_of("range(0, inf)"), HasSubstr("needs finite numbers"));
  // Each value keeps a copy of the override: long overrides hold fewer values.
  std::string long_key(2000, 'k');
  EXPECT_THAT(tlab::test::error_of<ConfigError>(
                  [&] { sweep_values(*parse_override(long_key + "=range(0, 100000)").sweep); }),
              HasSubstr("range(0, 100000) has 100000 values, too many for an override of 2017 "
                        "characters"));
  EXPECT_THAT(values_of("range(1e15, 1.000000000001e15, 0.01)"),
              HasSubstr("the step is too small"));
  // Errors end with the text and a caret under the sweep.
  EXPECT_THAT(values_of("x, range(5, 1)"), HasSubstr("a sweep function cannot be one value"));
  std::string e = tlab::test::error_of<ConfigError>(
      [] { sweep_values(*parse_override("seed=range(5,1)").sweep); });
  EXPECT_EQ(e,
            "override 'seed=range(5,1)' at character 6: range(5, 1) is empty: the stop is "
            "excluded, so it must be above the start (or below it with a negative step, e.g. "
            "range(5, 1, -1))\n    seed=range(5,1)\n         ^");
}

// Hydra draws a new order at each parse; tlab's is seeded by the override text, so that a
// resumed sweep sees the same order.
TEST(OverrideSweep, ShuffleKeepsTheValuesInAnOrderSeededByTheText) {
  auto values = [](const std::string& text) {
    return join_values(sweep_values(*parse_override(text).sweep));
  };
  const std::string sorted = "0, 1, 2, 3, 4, 5, 6, 7, 8, 9";
  const std::string once = values("x=shuffle(range(10))");
  EXPECT_EQ(values("x=shuffle(range(10))"), once);
  EXPECT_NE(once, sorted);
  auto as_sorted = [](const std::string& text) {
    Sweep s = *parse_override(text).sweep;
    std::vector<Node> v = sweep_values(s);
    std::sort(v.begin(), v.end(),
              [](const Node& a, const Node& b) { return a.as_int() < b.as_int(); });
    return join_values(v);
  };
  EXPECT_EQ(as_sorted("x=shuffle(range(10))"), sorted);
  EXPECT_EQ(as_sorted("x=shuffle(0,1,2,3,4,5,6,7,8,9)"), sorted);
  Node list = parse_override("x=shuffle([0,1,2,3,4,5,6,7,8,9])").value;
  EXPECT_NE(format_value(list), "[" + sorted + "]");
  EXPECT_EQ(list.size(), 10u);
  EXPECT_EQ(format_value(parse_override("x=shuffle([0,1,2,3,4,5,6,7,8,9])").value),
            format_value(list));
}

TEST(OverrideSweep, ChoiceAndGlob) {
  EXPECT_EQ(values_of("a, [1], null"), "a, [1], null");
  EXPECT_EQ(values_of("choice(x)"), "x");
  EXPECT_THAT(values_of("glob(*)"), HasSubstr("glob() picks among the options of a config group"));
  Sweep handmade;
  handmade.fn = Sweep::Fn::Range;
  handmade.start = Node::string("a");
  handmade.stop = Node::integer(3);
  handmade.step = Node::integer(1);
  EXPECT_THROW(sweep_values(handmade), ConfigError);
}

// --- Globs ------------------------------------------------------------------------------------

TEST(OverrideGlob, Match) {
  static const std::string many_a(60, 'a');
  struct G {
    const char* pattern;
    const char* name;
    bool match;
  };
  const G cases[] = {
      {"*", "anything", true},
      {"*", "", true},
      {"", "", true},
      {"", "a", false},
      {"a*", "abc", true},
      {"a*", "bac", false},
      {"*c", "abc", true},
      {"a*c", "ac", true},
      {"a*c", "abcbd", false},
      {"a*b*c", "axbyc", true},
      {"?", "a", true},
      {"?", "", false},
      // fnmatch(3) in the C locale (tlab's): '?' and [...] match one byte, not one character.
      {"?", "é", false},
      {"??", "é", true},
      {"*é", "café", true},
      {"[!a]", "b", true},
      {"*[", "x[", true},
      {"[a-z", "[a-z", true},
      {"a?c", "abc", true},
      {"[abc]x", "bx", true},
      {"[abc]x", "dx", false},
      {"[a-z]1", "q1", true},
      {"[a-z]1", "Q1", false},
      {"[!a]b", "cb", true},
      {"[!a]b", "ab", false},
      {"[^a]b", "cb", true},
      {"[]]", "]", true},
      {"[a-]", "-", true},
      {"[", "[", true},
      {"[ab", "[ab", true},
      {"\\*", "*", true},
      {"\\*", "a", false},
      {"d*", "digits", true},
      {"*_v[0-9]", "net_v2", true},
      {"*a*a*a*a*b", many_a.c_str(), false},
  };
  for (const auto& g : cases)
    EXPECT_EQ(glob_match(g.pattern, g.name), g.match) << g.pattern << " vs " << g.name;
  // fnmatch reads C strings: a NUL must not end a pattern early ("a\0b" is not "a").
  EXPECT_FALSE(glob_match(std::string_view("a\0b", 3), "a"));
  EXPECT_TRUE(glob_match(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
}

TEST(OverrideGlob, OptionsAreSortedIncludeMinusExclude) {
  Sweep s = *parse_override("strategy=glob(*,exclude=d*)").sweep;
  EXPECT_EQ(glob_options(s, {"finetune", "dann", "linear", "deep_coral", "linear"}),
            (std::vector<std::string>{"finetune", "linear"}));
  Sweep t = *parse_override("m=glob([res*, vit*], exclude=[*_big, vit_s])").sweep;
  EXPECT_EQ(glob_options(t, {"vit_s", "resnet50", "vit_b", "resnet_big", "cnn"}),
            (std::vector<std::string>{"resnet50", "vit_b"}));
  EXPECT_TRUE(glob_options(t, {}).empty());
}

// --- Canonical text ---------------------------------------------------------------------------

TEST(OverrideFormat, CanonicalText) {
  EXPECT_EQ(format_value(Node::null()), "null");
  EXPECT_EQ(format_value(Node::boolean(true)), "true");
  EXPECT_EQ(format_value(Node::integer(-3)), "-3");
  EXPECT_EQ(format_value(Node::floating(1)), "1.0");
  EXPECT_EQ(format_value(Node::floating(1e-5)), "1e-05");
  EXPECT_EQ(format_value(Node::floating(-std::numeric_limits<double>::infinity())), "-inf");
  EXPECT_EQ(format_value(Node::string("abc")), "abc");
  EXPECT_EQ(format_value(Node::string("1")), "'1'");
  EXPECT_EQ(format_value(Node::string("a b")), "'a b'");
  EXPECT_EQ(format_value(Node::string("it's")), R"('it\'s')");
  EXPECT_EQ(format_value(Node::string(R"(a\)")), R"('a\\')");
  EXPECT_EQ(format_value(Node::string(R"(C:\dir\file)")), R"(C:\dir\file)");
  EXPECT_EQ(format_value(Node::string(R"(a\,b)")), R"('a\,b')");
  EXPECT_EQ(format_value(Node::string(R"(a\')")), R"('a\\\'')");
  Node list = Node::list();
  list.push_back(Node::integer(1));
  list.push_back(Node::string("x y"));
  EXPECT_EQ(format_value(list), "[1, 'x y']");
  Node table = Node::table();
  table.set("a", Node::integer(1));
  table.set("x.y", list);
  EXPECT_EQ(format_value(table), "{a: 1, 'x.y': [1, 'x y']}");
}

TEST(OverrideFormat, RoundTrips) {
  std::vector<Node> values;
  for (const char* s :
       {"a",    "1",      "-1",    "1.5",    "1e3",       ".5",          "1_000", "007",
        "true", "False",  "null",  "NULL",   "nan",       "inf",         "-inf",  "",
        " ",    "a b",    " lead", "trail ", "a,b",       "[x]",         "{x}",   "(x)",
        "x)",   "a=b",    "it's",  "\"q\"",  "a'b\"c",    "back\\slash", "\\",    "\\'",
        "'\\",  "${a.b}", "${",    "}",      "x_${a}",    "$",           "-",     "+",
        "~",    "@",      "é",     "日本語", "tab\there", "choice(a,b)", "range", "a:b",
        "#",    "a;b",    "`"})
    values.push_back(Node::string(s));
  for (int64_t i : {int64_t{0}, int64_t{-1}, int64_t{42}, std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max()})
    values.push_back(Node::integer(i));
  for (double d :
       {0.0, -0.0, 0.1, 1.0, -2.5, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, 123456789.123,
        1e16, 0.30000000000000004, std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()})
    values.push_back(Node::floating(d));
  values.push_back(Node::boolean(false));
  values.push_back(Node::null());
  Node list = Node::list();
  for (const auto& v : std::vector<Node>(values)) list.push_back(v);
  Node nested = Node::list();
  nested.push_back(list);
  nested.push_back(Node::list());
  Node table = Node::table();
  table.set("plain", Node::integer(1));
  table.set("with space", list);
  table.set("1", Node::string("one"));
  table.set("a.b", Node::table());
  table.set("quote'", nested);
  values.push_back(list);
  values.push_back(nested);
  values.push_back(table);
  for (const auto& v : values) {
    std::string text = format_value(v);
    tlab::cfg::ParsedValue back;
    ASSERT_NO_THROW(back = parse_value(text, "t")) << text;
    EXPECT_FALSE(back.sweep) << text;
    EXPECT_EQ(back.value, v) << text;
    EXPECT_EQ(format_value(back.value), text);
    // As the value of an override, too.
    Override o = parse_override("k=" + text);
    EXPECT_EQ(o.value, v) << text;
  }
}

// --- Hostile input ----------------------------------------------------------------------------

TEST(OverrideHostile, DeepNestingIsRefusedWithoutRecursionTrouble) {
  for (char open : {'[', '{'}) {
    std::string text = "x=" + std::string(10000, open);
    std::string e = error_of(text);
    EXPECT_THAT(e, HasSubstr(open == '[' ? "at character 67: the value is nested too deeply"
                                         : "at character 4: expected a key"))
        << open;
  }
  std::string tables = "x=";
  for (int i = 0; i < 10000; ++i) tables += "{a:";
  EXPECT_THAT(error_of(tables), HasSubstr("nested too deeply"));
  std::string calls = "x=";
  for (int i = 0; i < 10000; ++i) calls += "int(";
  EXPECT_THAT(error_of(calls), HasSubstr("nested too deeply"));
  EXPECT_THAT(error_of("x=${" + std::string(10000, '{')), HasSubstr("is not closed"));
}

TEST(OverrideHostile, LongInputs) {
  std::string big(1 << 20, 'a');
  Override o = parse_override("x=" + big);
  EXPECT_EQ(o.value.as_string(), big);
  EXPECT_THAT(error_of(big), HasSubstr("at character 1048577: not of the form key=value"));
  std::string key(100000, 'k');
  EXPECT_EQ(parse_override(key + "=1").key, key);
  // Many values in a long text: refused before the copies of the text add up.
  std::string many = "x=";
  for (int i = 0; i < 500000; ++i) many += "1,";
  many += "1";
  EXPECT_THAT(error_of(many), HasSubstr("the override is too large"));
  std::string list = "x=[";
  for (int i = 0; i < 2000; ++i) list += "a,";
  EXPECT_EQ(parse_override(list + "b]").value.size(), 2001u);
}

TEST(OverrideHostile, BytesThatAreNotText) {
  EXPECT_THAT(error_of(std::string("x=\0", 3)), HasSubstr("at character 3: control character"));
  EXPECT_THAT(error_of(std::string("\0=1", 3)), HasSubstr("at character 1: control character"));
  EXPECT_THAT(error_of("ab\xff=1"), HasSubstr("at character 3: byte 0xFF is not valid UTF-8"));
  EXPECT_THAT(error_of("x='日本\xe6'"), HasSubstr("at character 6: byte 0xE6 is not valid UTF-8"));
  EXPECT_THAT(error_of("x=\xf4\x90\x80\x80"), HasSubstr("byte 0xF4 is not valid UTF-8"));
  // The message shows '?' for the bad byte, so that it can be printed.
  std::string e = error_of("x=a\x1b[31mb");
  EXPECT_THAT(e, HasSubstr("override 'x=a?[31mb' at character 4: control character U+001B"));
  EXPECT_EQ(e.find('\x1b'), std::string::npos);
}

}  // namespace
